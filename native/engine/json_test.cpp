// Json parser tests: values, escapes, exact integers, strictness, limits, error messages, files.
#include "json.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <limits>

#include "../test/test.h"

using xpsr::ErrorCode;
using xpsr::Json;

namespace {
ErrorCode code_of(const std::string& path) {
  try {
    Json::parse_file(path);
  } catch (const xpsr::Error& e) {
    return e.code();
  }
  return ErrorCode::Internal;
}
std::string temp_file(const std::string& name, const std::string& content) {
  const char* t = std::getenv("TMPDIR");
  std::string p = std::string(t && *t ? t : "/tmp") + "/xpsr_json_test_" + std::to_string(::getpid()) + "_" + name;
  std::FILE* f = std::fopen(p.c_str(), "wb");
  std::fwrite(content.data(), 1, content.size(), f);
  std::fclose(f);
  return p;
}
}  // namespace

TEST(json_parses_values_in_order) {
  Json j = Json::parse(" {\"b\": [1, -2.5e2, true, false, null, \"s\"], \"a\": {\"x\": {}}, \"c\": []}\n");
  CHECK(j.is_object() && j.size() == 3);
  CHECK(j.as_object()[0].first == "b" && j.as_object()[1].first == "a");  // insertion order
  const Json& b = j["b"];
  CHECK(b.is_array() && b.size() == 6);
  CHECK(b.as_array()[0].as_int() == 1);
  CHECK(b.as_array()[1].as_number() == -250.0);
  CHECK(b.as_array()[2].as_bool() && !b.as_array()[3].as_bool());
  CHECK(b.as_array()[4].is_null());
  CHECK(b.as_array()[5].as_string() == "s");
  CHECK(j["a"]["x"].is_object() && j["a"]["x"].size() == 0);
  CHECK(j.has("c") && !j.has("zz") && j.find("zz") == nullptr && j["b"].find("x") == nullptr);
  CHECK_THROWS_WITH(j["zz"], "no key 'zz'");
  CHECK_THROWS_WITH(j["b"].as_string(), "is an array, expected a string");
  CHECK_THROWS_WITH(b.as_array()[5].as_number(), "expected a number");
  CHECK(Json::parse("3").as_int() == 3 && Json::parse("\"x\"").as_string() == "x" && Json::parse("null").is_null());
}

TEST(json_numbers_and_exact_ints) {
  CHECK(Json::parse("9007199254740993").as_int() == 9007199254740993LL);  // not representable as double
  CHECK(Json::parse("9223372036854775807").as_int() == std::numeric_limits<int64_t>::max());
  CHECK(Json::parse("-9223372036854775808").as_int() == std::numeric_limits<int64_t>::min());
  CHECK_THROWS_WITH(Json::parse("9223372036854775808").as_int(), "does not fit in int64");
  CHECK_THROWS_WITH(Json::parse("-9223372036854775809").as_int(), "does not fit in int64");
  CHECK(Json::parse("1e3").as_int() == 1000 && Json::parse("2.0").as_int() == 2 && Json::parse("-0").as_int() == 0);
  CHECK_THROWS_WITH(Json::parse("1.5").as_int(), "not an integer");
  CHECK_THROWS_WITH(Json::parse("1e300").as_int(), "too large");
  CHECK(Json::parse("0.1").as_number() == 0.1);
  CHECK(Json::parse("-1.25E-2").as_number() == -0.0125);
  CHECK(Json::parse("123456789012345678901234567890").as_number() == 1.2345678901234568e29);
  CHECK(std::isinf(Json::parse("1e400").as_number()));
  CHECK(Json::parse("1e-400").as_number() == 0.0);
  for (const char* bad : {"01", "-", "1.", ".5", "+1", "1e", "1e+", "0x10", "NaN", "Infinity", "-01"})
    CHECK_THROWS_WITH(Json::parse(bad), "JSON error at byte");
}

TEST(json_strings_escapes_utf8) {
  CHECK(Json::parse("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"").as_string() == "a\"b\\c/d\b\f\n\r\t");
  CHECK(Json::parse("\"\\u0041\\u00e9\\u20AC\"").as_string() == "A\xC3\xA9\xE2\x82\xAC");
  CHECK(Json::parse("\"\\ud83d\\ude00\"").as_string() == "\xF0\x9F\x98\x80");  // surrogate pair -> U+1F600
  CHECK(Json::parse("\"\\u0000\"").as_string() == std::string(1, '\0'));
  CHECK(Json::parse("\"h\xC3\xA9 \xF0\x9F\x98\x80\"").as_string() == "h\xC3\xA9 \xF0\x9F\x98\x80");  // raw UTF-8 kept
  CHECK_THROWS_WITH(Json::parse("\"\\ud83d\""), "high surrogate");
  CHECK_THROWS_WITH(Json::parse("\"\\ud83d\\u0041\""), "high surrogate");
  CHECK_THROWS_WITH(Json::parse("\"\\ude00\""), "lone low surrogate");
  CHECK_THROWS_WITH(Json::parse("\"\\u12G4\""), "invalid hex digit");
  CHECK_THROWS_WITH(Json::parse("\"\\x\""), "invalid escape");
  CHECK_THROWS_WITH(Json::parse("\"a\nb\""), "control character");
  CHECK_THROWS_WITH(Json::parse("\"abc"), "unterminated string");
  CHECK_THROWS_WITH(Json::parse("\"\xC0\xAF\""), "invalid UTF-8");          // overlong '/'
  CHECK_THROWS_WITH(Json::parse("\"\xED\xA0\x80\""), "invalid UTF-8");      // encoded surrogate
  CHECK_THROWS_WITH(Json::parse("\"\xF4\x90\x80\x80\""), "invalid UTF-8");  // > U+10FFFF
  CHECK_THROWS_WITH(Json::parse("\"\xE2\x82\""), "UTF-8");                  // truncated
  CHECK_THROWS_WITH(Json::parse("\"\xFF\""), "invalid UTF-8");
}

TEST(json_strictness_and_messages) {
  CHECK_THROWS_WITH(Json::parse("{\"a\":1,}", "config.json"),
                    "config.json: JSON error at byte 7: expected a string key (found '}')");
  CHECK_THROWS_WITH(Json::parse("[1,2,]"), "JSON error at byte 5: expected a value");
  CHECK_THROWS_WITH(Json::parse("[1 2]"), "JSON error at byte 3: expected ',' or ']'");
  CHECK_THROWS_WITH(Json::parse("{\"a\" 1}"), "expected ':'");
  CHECK_THROWS_WITH(Json::parse("{'a':1}"), "expected a string key");
  CHECK_THROWS_WITH(Json::parse("{\"a\":1,\"a\":2}"), "JSON error at byte 7: duplicate key 'a'");
  CHECK_THROWS_WITH(Json::parse(""), "JSON error at byte 0: expected a value (found end of input)");
  CHECK_THROWS_WITH(Json::parse("   "), "expected a value");
  CHECK_THROWS_WITH(Json::parse("{} {}"), "unexpected data after the JSON value");
  CHECK_THROWS_WITH(Json::parse("tru"), "expected 'true'");
  CHECK_THROWS_WITH(Json::parse("nul"), "expected 'null'");
  CHECK_THROWS_WITH(Json::parse("// c\n{}"), "expected a value");
  CHECK_THROWS_WITH(Json::parse(std::string("[1]\0", 4)), "found byte 0x00");
  try {
    Json::parse("[");
    CHECK(false);
  } catch (const xpsr::Error& e) {
    CHECK(e.code() == ErrorCode::InvalidArgument);
  }
}

TEST(json_depth_limit) {
  std::string ok = std::string(64, '[') + std::string(64, ']');
  CHECK(Json::parse(ok).is_array());
  std::string deep = std::string(65, '[') + std::string(65, ']');
  CHECK_THROWS_WITH(Json::parse(deep), "nesting deeper than 64");
  CHECK(Json::parse(deep, "x", 100).is_array());
  CHECK_THROWS_WITH(Json::parse("{\"a\":{\"b\":1}}", "x", 1), "nesting deeper than 1");
  // A hostile depth far beyond any limit must fail cleanly (no stack overflow), even with a huge max.
  std::string hostile(1000000, '[');
  CHECK_THROWS_WITH(Json::parse(hostile), "nesting deeper");
  CHECK_THROWS_WITH(Json::parse(hostile, "x", (size_t)-1), "nesting deeper than 1000");
}

TEST(json_parse_file) {
  std::string p = temp_file("ok.json", "\xEF\xBB\xBF{\"in_channels\": 4, \"block_out_channels\": [32, 64]}\n");
  Json j = Json::parse_file(p);
  CHECK(j["in_channels"].as_int() == 4 && j["block_out_channels"].size() == 2);
  std::string bad = temp_file("bad.json", "{\"a\": }");
  CHECK_THROWS_WITH(Json::parse_file(bad), bad + ": JSON error at byte 6");
  CHECK(code_of(bad) == ErrorCode::InvalidArgument);
  std::remove(p.c_str());
  std::remove(bad.c_str());
  CHECK_THROWS_WITH(Json::parse_file(p), p + ": file not found");
  CHECK(code_of(p) == ErrorCode::WeightsMissing);
  CHECK_THROWS_WITH(Json::parse_file("/"), "is a directory");
  CHECK(code_of("/") == ErrorCode::Io);
  // The real configs, when the fixtures are present.
  std::string cfg = xpsr_test::fixtures_dir() + "/model/unet/config.json";
  struct stat st;
  if (::stat(cfg.c_str(), &st) == 0) {
    Json c = Json::parse_file(cfg);
    CHECK(c.is_object() && c.has("in_channels"));
    for (const char* rel :
         {"tokenizer_cases.json", "tolerances.json", "model/tokenizer/vocab.json", "pipeline_default.json"}) {
      std::string q = xpsr_test::fixtures_dir() + "/" + rel;
      if (::stat(q.c_str(), &st) == 0) CHECK(Json::parse_file(q).size() > 0);
    }
  }
}
