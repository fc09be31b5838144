// A small, strict JSON reader for config.json files and safetensors headers. Bounded: input size,
// nesting depth and string lengths are limited, so a hostile file gives an Error, not a crash.
// Tests: native/engine/json_test.cpp.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../common/error.h"

namespace xpsr {

class Json {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };

  // Throws Error(InvalidArgument) with the byte offset of the problem; `what` names the source
  // (a file path) for messages.
  static Json parse(const std::string& text, const std::string& what = "JSON", size_t max_depth = 64);
  static Json parse_file(const std::string& path);  // Error(Io/WeightsMissing) if unreadable

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::Null; }
  bool is_bool() const { return type_ == Type::Bool; }
  bool is_number() const { return type_ == Type::Number; }
  bool is_string() const { return type_ == Type::String; }
  bool is_array() const { return type_ == Type::Array; }
  bool is_object() const { return type_ == Type::Object; }

  bool as_bool() const;      // throws if not a bool
  double as_number() const;  // throws if not a number
  int64_t as_int() const;    // throws if not an integral number
  const std::string& as_string() const;
  const std::vector<Json>& as_array() const;
  const std::vector<std::pair<std::string, Json>>& as_object() const;  // insertion order

  bool has(const std::string& key) const;                // object only
  const Json& operator[](const std::string& key) const;  // throws if absent
  const Json* find(const std::string& key) const;        // nullptr if absent or not an object
  size_t size() const;

 private:
  Type type_ = Type::Null;
  bool b_ = false;
  double num_ = 0;
  std::string str_;
  std::vector<Json> arr_;
  std::vector<std::pair<std::string, Json>> obj_;
  friend class JsonParser;
};

}  // namespace xpsr
