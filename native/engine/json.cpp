// Strict RFC 8259 JSON reader (see json.h). Recursive descent with explicit limits:
//   * input size (parse: 256 MB, parse_file: 64 MB), nesting depth (max_depth, capped at 1000),
//     string length (64 MB), total number of values (4 M) so a hostile header cannot exhaust memory;
//   * UTF-8 validated (no overlong forms, no encoded surrogates, <= U+10FFFF); \u escapes decoded,
//     surrogate pairs joined, lone surrogates rejected;
//   * duplicate object keys rejected (the RFC leaves them undefined; a safetensors header must not
//     have them);
//   * numbers kept as double; integer literals also keep their text (in str_, unused for numbers)
//     so as_int() is exact over the whole int64 range.
// Every error is Error(InvalidArgument, "<what>: JSON error at byte N: ...").
#include "json.h"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <locale>
#include <sstream>
#include <unordered_set>

namespace xpsr {

namespace {
constexpr size_t kMaxText = size_t(256) << 20;
constexpr size_t kMaxFile = size_t(64) << 20;
constexpr size_t kMaxString = size_t(64) << 20;
constexpr size_t kMaxValues = size_t(4) << 20;
constexpr size_t kDepthCap = 1000;

const char* type_name(Json::Type t) {
  switch (t) {
    case Json::Type::Null: return "null";
    case Json::Type::Bool: return "a bool";
    case Json::Type::Number: return "a number";
    case Json::Type::String: return "a string";
    case Json::Type::Array: return "an array";
    case Json::Type::Object: return "an object";
  }
  return "?";
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += (char)cp;
  } else if (cp < 0x800) {
    out += (char)(0xC0 | (cp >> 6));
    out += (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += (char)(0xE0 | (cp >> 12));
    out += (char)(0x80 | ((cp >> 6) & 0x3F));
    out += (char)(0x80 | (cp & 0x3F));
  } else {
    out += (char)(0xF0 | (cp >> 18));
    out += (char)(0x80 | ((cp >> 12) & 0x3F));
    out += (char)(0x80 | ((cp >> 6) & 0x3F));
    out += (char)(0x80 | (cp & 0x3F));
  }
}

// Locale-independent decimal -> double (the grammar was already checked).
double to_double(const char* s, size_t n) {
  std::istringstream in(std::string(s, n));
  in.imbue(std::locale::classic());
  double v = 0;
  in >> v;
  if (in.fail()) {
    // Out-of-range literals: istream sets failbit; decide between +-inf and 0 by the exponent sign.
    const char* e = (const char*)std::memchr(s, 'e', n);
    if (!e) e = (const char*)std::memchr(s, 'E', n);
    bool neg_exp = e && e + 1 < s + n && e[1] == '-';
    double mag = neg_exp ? 0.0 : std::numeric_limits<double>::infinity();
    v = (n && s[0] == '-') ? -mag : mag;
  }
  return v;
}
}  // namespace

class JsonParser {
 public:
  JsonParser(const std::string& text, const std::string& what, size_t max_depth)
      : p_(text.data()),
        begin_(text.data()),
        end_(text.data() + text.size()),
        what_(what),
        max_depth_(max_depth > kDepthCap ? kDepthCap : max_depth) {
    if (text.size() > kMaxText)
      fail(ErrorCode::InvalidArgument, what_, ": JSON text is too large (", text.size(), " bytes, limit ", kMaxText,
           ")");
  }

  Json parse_document() {
    Json v;
    skip_ws();
    parse_value(v, 0);
    skip_ws();
    if (p_ != end_) error("unexpected data after the JSON value");
    return v;
  }

 private:
  const char* p_;
  const char* begin_;
  const char* end_;
  const std::string& what_;
  size_t max_depth_;
  size_t values_ = 0;

  [[noreturn]] void error(const std::string& msg) const { error_at(p_, msg); }
  [[noreturn]] void error_at(const char* at, const std::string& msg) const {
    std::ostringstream o;
    o << what_ << ": JSON error at byte " << (size_t)(at - begin_) << ": " << msg;
    if (at < end_) {
      unsigned char c = (unsigned char)*at;
      if (c >= 0x20 && c < 0x7F) o << " (found '" << (char)c << "')";
      else {
        char buf[8];
        std::snprintf(buf, sizeof buf, "0x%02X", c);
        o << " (found byte " << buf << ")";
      }
    } else {
      o << " (found end of input)";
    }
    throw Error(ErrorCode::InvalidArgument, o.str());
  }

  void skip_ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  void count_value() {
    if (++values_ > kMaxValues) error("too many values (limit " + std::to_string(kMaxValues) + ")");
  }

  void expect_literal(const char* lit) {
    size_t n = std::strlen(lit);
    if ((size_t)(end_ - p_) < n || std::memcmp(p_, lit, n) != 0)
      error(std::string("invalid literal, expected '") + lit + "'");
    p_ += n;
  }

  void parse_value(Json& out, size_t depth) {
    count_value();
    if (p_ >= end_) error("expected a value");
    switch (*p_) {
      case '{': parse_object(out, depth + 1); return;
      case '[': parse_array(out, depth + 1); return;
      case '"':
        out.type_ = Json::Type::String;
        parse_string(out.str_);
        return;
      case 't':
        expect_literal("true");
        out.type_ = Json::Type::Bool;
        out.b_ = true;
        return;
      case 'f':
        expect_literal("false");
        out.type_ = Json::Type::Bool;
        out.b_ = false;
        return;
      case 'n':
        expect_literal("null");
        out.type_ = Json::Type::Null;
        return;
      default:
        if (*p_ == '-' || (*p_ >= '0' && *p_ <= '9')) {
          parse_number(out);
          return;
        }
        error("expected a value");
    }
  }

  void parse_object(Json& out, size_t depth) {
    if (depth > max_depth_) error("nesting deeper than " + std::to_string(max_depth_));
    out.type_ = Json::Type::Object;
    ++p_;  // '{'
    skip_ws();
    if (p_ < end_ && *p_ == '}') {
      ++p_;
      return;
    }
    std::unordered_set<std::string> seen;
    for (;;) {
      skip_ws();
      if (p_ >= end_ || *p_ != '"') error("expected a string key");
      const char* key_at = p_;
      std::string key;
      parse_string(key);
      if (!seen.insert(key).second) error_at(key_at, "duplicate key '" + key + "'");
      skip_ws();
      if (p_ >= end_ || *p_ != ':') error("expected ':' after an object key");
      ++p_;
      skip_ws();
      out.obj_.emplace_back(std::move(key), Json());
      parse_value(out.obj_.back().second, depth);
      skip_ws();
      if (p_ < end_ && *p_ == ',') {
        ++p_;
        continue;
      }
      if (p_ < end_ && *p_ == '}') {
        ++p_;
        return;
      }
      error("expected ',' or '}' in an object");
    }
  }

  void parse_array(Json& out, size_t depth) {
    if (depth > max_depth_) error("nesting deeper than " + std::to_string(max_depth_));
    out.type_ = Json::Type::Array;
    ++p_;  // '['
    skip_ws();
    if (p_ < end_ && *p_ == ']') {
      ++p_;
      return;
    }
    for (;;) {
      skip_ws();
      out.arr_.emplace_back();
      parse_value(out.arr_.back(), depth);
      skip_ws();
      if (p_ < end_ && *p_ == ',') {
        ++p_;
        continue;
      }
      if (p_ < end_ && *p_ == ']') {
        ++p_;
        return;
      }
      error("expected ',' or ']' in an array");
    }
  }

  int hex4(const char* at) {
    if (end_ - at < 4) error_at(at, "truncated \\u escape");
    int v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = at[i];
      int d;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      else error_at(at + i, "invalid hex digit in \\u escape");
      v = v * 16 + d;
    }
    return v;
  }

  void parse_string(std::string& out) {
    ++p_;  // opening quote
    for (;;) {
      // Fast path: copy a run of plain ASCII.
      const char* run = p_;
      while (p_ < end_) {
        unsigned char c = (unsigned char)*p_;
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
        ++p_;
      }
      out.append(run, (size_t)(p_ - run));
      if (out.size() > kMaxString) error("string longer than " + std::to_string(kMaxString) + " bytes");
      if (p_ >= end_) error("unterminated string");
      unsigned char c = (unsigned char)*p_;
      if (c == '"') {
        ++p_;
        return;
      }
      if (c < 0x20) error("control character in a string (must be escaped)");
      if (c == '\\') {
        if (end_ - p_ < 2) error("unterminated escape");
        char e = p_[1];
        switch (e) {
          case '"':
            out += '"';
            p_ += 2;
            break;
          case '\\':
            out += '\\';
            p_ += 2;
            break;
          case '/':
            out += '/';
            p_ += 2;
            break;
          case 'b':
            out += '\b';
            p_ += 2;
            break;
          case 'f':
            out += '\f';
            p_ += 2;
            break;
          case 'n':
            out += '\n';
            p_ += 2;
            break;
          case 'r':
            out += '\r';
            p_ += 2;
            break;
          case 't':
            out += '\t';
            p_ += 2;
            break;
          case 'u': {
            const char* at = p_;
            uint32_t cp = (uint32_t)hex4(p_ + 2);
            p_ += 6;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              if (end_ - p_ < 6 || p_[0] != '\\' || p_[1] != 'u')
                error_at(at, "high surrogate \\u escape not followed by a low surrogate");
              uint32_t lo = (uint32_t)hex4(p_ + 2);
              if (lo < 0xDC00 || lo > 0xDFFF) error_at(at, "high surrogate \\u escape not followed by a low surrogate");
              p_ += 6;
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
              error_at(at, "lone low surrogate \\u escape");
            }
            append_utf8(out, cp);
            break;
          }
          default: error_at(p_ + 1, "invalid escape");
        }
        continue;
      }
      // Multi-byte UTF-8 sequence: validate strictly and copy.
      size_t n;
      uint32_t cp, min;
      if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
        min = 0x80;
      } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
        min = 0x800;
      } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
        min = 0x10000;
      } else error("invalid UTF-8 in a string");
      if ((size_t)(end_ - p_) < n) error("truncated UTF-8 sequence in a string");
      for (size_t i = 1; i < n; ++i) {
        unsigned char cc = (unsigned char)p_[i];
        if ((cc & 0xC0) != 0x80) error_at(p_ + i, "invalid UTF-8 continuation byte in a string");
        cp = (cp << 6) | (cc & 0x3F);
      }
      if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) error("invalid UTF-8 sequence in a string");
      out.append(p_, n);
      p_ += n;
    }
  }

  void parse_number(Json& out) {
    const char* start = p_;
    bool integral = true;
    if (*p_ == '-') ++p_;
    if (p_ >= end_) error("expected a digit");
    if (*p_ == '0') {
      ++p_;
      if (p_ < end_ && *p_ >= '0' && *p_ <= '9') error("leading zeros are not allowed");
    } else if (*p_ >= '1' && *p_ <= '9') {
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    } else {
      error("expected a digit");
    }
    if (p_ < end_ && *p_ == '.') {
      integral = false;
      ++p_;
      if (p_ >= end_ || !(*p_ >= '0' && *p_ <= '9')) error("expected a digit after '.'");
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      integral = false;
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ >= end_ || !(*p_ >= '0' && *p_ <= '9')) error("expected a digit in the exponent");
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    size_t n = (size_t)(p_ - start);
    if (n > 4096) error_at(start, "number literal too long");
    out.type_ = Json::Type::Number;
    if (integral && n <= 17) {  // fast path for integers up to 2^53 (exact as double)
      const char* s = start;
      bool neg = *s == '-';
      if (neg) ++s;
      int64_t mag = 0;
      for (; s < p_; ++s) mag = mag * 10 + (*s - '0');
      if (mag <= ((int64_t)1 << 53)) {
        out.num_ = neg ? -(double)mag : (double)mag;
        out.str_.assign(start, n);
        return;
      }
    }
    out.num_ = to_double(start, n);
    if (integral) out.str_.assign(start, n);  // exact text for as_int()
  }
};

Json Json::parse(const std::string& text, const std::string& what, size_t max_depth) {
  JsonParser p(text, what, max_depth);
  return p.parse_document();
}

Json Json::parse_file(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR) fail(ErrorCode::WeightsMissing, path, ": file not found");
    fail(ErrorCode::Io, path, ": cannot open: ", std::strerror(err));
  }
  if (S_ISDIR(st.st_mode)) fail(ErrorCode::Io, path, ": is a directory, not a JSON file");
  if (st.st_size > 0 && (uint64_t)st.st_size > kMaxFile)
    fail(ErrorCode::Io, path, ": file is too large for a JSON file (", (uint64_t)st.st_size, " bytes, limit ", kMaxFile,
         ")");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    int err = errno;
    if (err == ENOENT) fail(ErrorCode::WeightsMissing, path, ": file not found");
    fail(ErrorCode::Io, path, ": cannot open: ", std::strerror(err));
  }
  std::string text;
  char buf[65536];
  for (;;) {
    size_t got = std::fread(buf, 1, sizeof buf, f);
    text.append(buf, got);
    if (text.size() > kMaxFile) {
      std::fclose(f);
      fail(ErrorCode::Io, path, ": file is too large for a JSON file (limit ", kMaxFile, " bytes)");
    }
    if (got < sizeof buf) {
      bool bad = std::ferror(f) != 0;
      std::fclose(f);
      if (bad) fail(ErrorCode::Io, path, ": read error");
      break;
    }
  }
  // A UTF-8 byte order mark is allowed (RFC 8259 section 8.1: parsers MAY ignore it).
  if (text.size() >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB &&
      (unsigned char)text[2] == 0xBF)
    text.erase(0, 3);
  return parse(text, path);
}

bool Json::as_bool() const {
  if (type_ != Type::Bool) fail(ErrorCode::InvalidArgument, "JSON value is ", type_name(type_), ", expected a bool");
  return b_;
}

double Json::as_number() const {
  if (type_ != Type::Number)
    fail(ErrorCode::InvalidArgument, "JSON value is ", type_name(type_), ", expected a number");
  return num_;
}

int64_t Json::as_int() const {
  if (type_ != Type::Number)
    fail(ErrorCode::InvalidArgument, "JSON value is ", type_name(type_), ", expected an integer");
  if (!str_.empty()) {  // integer literal: exact
    const char* s = str_.c_str();
    bool neg = *s == '-';
    if (neg) ++s;
    uint64_t mag = 0;
    const uint64_t limit = neg ? (uint64_t)1 << 63 : ((uint64_t)1 << 63) - 1;
    for (; *s; ++s) {
      uint64_t d = (uint64_t)(*s - '0');
      if (mag > (limit - d) / 10) fail(ErrorCode::InvalidArgument, "JSON integer ", str_, " does not fit in int64");
      mag = mag * 10 + d;
    }
    if (neg) return mag == ((uint64_t)1 << 63) ? std::numeric_limits<int64_t>::min() : -(int64_t)mag;
    return (int64_t)mag;
  }
  // 1.0, 1e3: accept when integral and exactly representable.
  if (!std::isfinite(num_) || std::trunc(num_) != num_)
    fail(ErrorCode::InvalidArgument, "JSON number ", num_, " is not an integer");
  if (std::fabs(num_) > 9007199254740992.0)
    fail(ErrorCode::InvalidArgument, "JSON number ", num_, " is too large to be an exact integer");
  return (int64_t)num_;
}

const std::string& Json::as_string() const {
  if (type_ != Type::String)
    fail(ErrorCode::InvalidArgument, "JSON value is ", type_name(type_), ", expected a string");
  return str_;
}

const std::vector<Json>& Json::as_array() const {
  if (type_ != Type::Array) fail(ErrorCode::InvalidArgument, "JSON value is ", type_name(type_), ", expected an array");
  return arr_;
}

const std::vector<std::pair<std::string, Json>>& Json::as_object() const {
  if (type_ != Type::Object)
    fail(ErrorCode::InvalidArgument, "JSON value is ", type_name(type_), ", expected an object");
  return obj_;
}

bool Json::has(const std::string& key) const { return find(key) != nullptr; }

const Json* Json::find(const std::string& key) const {
  if (type_ != Type::Object) return nullptr;
  for (const auto& kv : obj_)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

const Json& Json::operator[](const std::string& key) const {
  if (type_ != Type::Object)
    fail(ErrorCode::InvalidArgument, "JSON value is ", type_name(type_), ", expected an object with key '", key, "'");
  const Json* v = find(key);
  if (!v) fail(ErrorCode::InvalidArgument, "JSON object has no key '", key, "'");
  return *v;
}

size_t Json::size() const {
  if (type_ == Type::Array) return arr_.size();
  if (type_ == Type::Object) return obj_.size();
  if (type_ == Type::String) return str_.size();
  return 0;
}

}  // namespace xpsr
