// A small JSON reader and string escaper: enough for the export manifest, no third-party dependency.
//
// Parses RFC 8259 JSON (objects, arrays, strings with \u escapes and surrogate pairs, numbers, true,
// false, null) into a tree of Json values. Errors throw yoloworld::Error with the byte offset.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace yoloworld {

struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class Json {
public:
    enum class Type { Null, Bool, Number, String, Array, Object };

    Json() = default;
    static Json boolean(bool b) { Json j; j.type_ = Type::Bool; j.bool_ = b; return j; }
    static Json number(double v) { Json j; j.type_ = Type::Number; j.number_ = v; return j; }
    static Json string(std::string s) { Json j; j.type_ = Type::String; j.string_ = std::move(s); return j; }
    static Json array() { Json j; j.type_ = Type::Array; return j; }
    static Json object() { Json j; j.type_ = Type::Object; return j; }

    Type type() const { return type_; }
    bool is_null() const { return type_ == Type::Null; }
    bool is_object() const { return type_ == Type::Object; }
    bool is_array() const { return type_ == Type::Array; }

    bool as_bool() const { expect(Type::Bool, "a boolean"); return bool_; }
    double as_number() const { expect(Type::Number, "a number"); return number_; }
    int64_t as_int() const {
        double v = as_number();
        if (v != static_cast<double>(static_cast<int64_t>(v))) throw Error("JSON: expected an integer");
        return static_cast<int64_t>(v);
    }
    const std::string& as_string() const { expect(Type::String, "a string"); return string_; }
    const std::vector<Json>& as_array() const { expect(Type::Array, "an array"); return array_; }
    const std::map<std::string, Json>& as_object() const { expect(Type::Object, "an object"); return object_; }

    // Object member or nullptr (also for non-objects): optional manifest fields are common.
    const Json* find(const std::string& key) const {
        if (type_ != Type::Object) return nullptr;
        auto it = object_.find(key);
        return it == object_.end() ? nullptr : &it->second;
    }
    const Json& at(const std::string& key) const {
        const Json* v = find(key);
        if (!v) throw Error("JSON: missing key '" + key + "'");
        return *v;
    }

    std::vector<Json>& items() { return array_; }
    std::map<std::string, Json>& members() { return object_; }

    static Json parse(const std::string& text);

private:
    void expect(Type t, const char* what) const {
        if (type_ != t) throw Error(std::string("JSON: expected ") + what);
    }
    Type type_ = Type::Null;
    bool bool_ = false;
    double number_ = 0.0;
    std::string string_;
    std::vector<Json> array_;
    std::map<std::string, Json> object_;
};

namespace detail {

class JsonParser {
public:
    explicit JsonParser(const std::string& s) : s_(s) {}

    Json document() {
        Json v = value(0);
        skip_ws();
        if (pos_ != s_.size()) fail("trailing characters");
        return v;
    }

private:
    [[noreturn]] void fail(const std::string& why) const {
        throw Error("JSON parse error at byte " + std::to_string(pos_) + ": " + why);
    }
    void skip_ws() {
        while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
            ++pos_;
    }
    char peek() {
        skip_ws();
        if (pos_ >= s_.size()) fail("unexpected end");
        return s_[pos_];
    }
    bool consume_literal(const char* lit) {
        size_t n = std::char_traits<char>::length(lit);
        if (s_.compare(pos_, n, lit) != 0) return false;
        pos_ += n;
        return true;
    }

    Json value(int depth) {
        if (depth > 256) fail("nesting too deep");  // a bound so hostile input cannot blow the stack
        char c = peek();
        if (c == '{') return object(depth);
        if (c == '[') return array(depth);
        if (c == '"') return Json::string(string());
        if (consume_literal("true")) return Json::boolean(true);
        if (consume_literal("false")) return Json::boolean(false);
        if (consume_literal("null")) return Json();
        if (c == '-' || (c >= '0' && c <= '9')) return number();
        fail(std::string("unexpected character '") + c + "'");
    }

    Json object(int depth) {
        Json obj = Json::object();
        ++pos_;  // '{'
        if (peek() == '}') { ++pos_; return obj; }
        while (true) {
            if (peek() != '"') fail("expected a key string");
            std::string key = string();
            if (peek() != ':') fail("expected ':'");
            ++pos_;
            obj.members()[key] = value(depth + 1);  // a repeated key keeps the last value, like Python
            char c = peek();
            ++pos_;
            if (c == '}') return obj;
            if (c != ',') fail("expected ',' or '}'");
        }
    }

    Json array(int depth) {
        Json arr = Json::array();
        ++pos_;  // '['
        if (peek() == ']') { ++pos_; return arr; }
        while (true) {
            arr.items().push_back(value(depth + 1));
            char c = peek();
            ++pos_;
            if (c == ']') return arr;
            if (c != ',') fail("expected ',' or ']'");
        }
    }

    Json number() {
        size_t start = pos_;
        if (s_[pos_] == '-') ++pos_;
        auto digits = [&] {
            size_t d = pos_;
            while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
            if (pos_ == d) fail("malformed number");
        };
        digits();
        if (pos_ < s_.size() && s_[pos_] == '.') { ++pos_; digits(); }
        if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
            ++pos_;
            if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
            digits();
        }
        // strtod is locale-dependent for the decimal point; the "C" locale is the default in programs
        // that never call setlocale, which these samples do not.
        std::string text = s_.substr(start, pos_ - start);
        return Json::number(std::strtod(text.c_str(), nullptr));
    }

    unsigned hex4() {
        if (pos_ + 4 > s_.size()) fail("short \\u escape");
        unsigned v = 0;
        for (int i = 0; i < 4; ++i) {
            char c = s_[pos_++];
            v <<= 4;
            if (c >= '0' && c <= '9') v |= unsigned(c - '0');
            else if (c >= 'a' && c <= 'f') v |= unsigned(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') v |= unsigned(c - 'A' + 10);
            else fail("bad hex digit in \\u escape");
        }
        return v;
    }

    static void append_utf8(std::string& out, unsigned cp) {
        if (cp < 0x80) {
            out += char(cp);
        } else if (cp < 0x800) {
            out += char(0xC0 | (cp >> 6));
            out += char(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += char(0xE0 | (cp >> 12));
            out += char(0x80 | ((cp >> 6) & 0x3F));
            out += char(0x80 | (cp & 0x3F));
        } else {
            out += char(0xF0 | (cp >> 18));
            out += char(0x80 | ((cp >> 12) & 0x3F));
            out += char(0x80 | ((cp >> 6) & 0x3F));
            out += char(0x80 | (cp & 0x3F));
        }
    }

    std::string string() {
        ++pos_;  // opening quote
        std::string out;
        while (true) {
            if (pos_ >= s_.size()) fail("unterminated string");
            char c = s_[pos_++];
            if (c == '"') return out;
            if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
            if (c != '\\') { out += c; continue; }
            if (pos_ >= s_.size()) fail("unterminated escape");
            char e = s_[pos_++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    unsigned cp = hex4();
                    // Python's json.dumps (ensure_ascii) writes non-BMP characters as surrogate pairs
                    if (cp >= 0xD800 && cp < 0xDC00 && s_.compare(pos_, 2, "\\u") == 0) {
                        size_t save = pos_;
                        pos_ += 2;
                        unsigned lo = hex4();
                        if (lo >= 0xDC00 && lo < 0xE000) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        else pos_ = save;  // a lone high surrogate: keep it as is
                    }
                    append_utf8(out, cp);
                    break;
                }
                default: fail(std::string("bad escape \\") + e);
            }
        }
    }

    const std::string& s_;
    size_t pos_ = 0;
};

}  // namespace detail

inline Json Json::parse(const std::string& text) { return detail::JsonParser(text).document(); }

// A JSON string literal for `s` (UTF-8 passes through; quotes, backslashes and controls are escaped).
inline std::string json_quote(const std::string& s) {
    static const char* hex = "0123456789abcdef";
    std::string out = "\"";
    for (char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    out += "\\u00";
                    out += hex[(c >> 4) & 0xF];
                    out += hex[c & 0xF];
                } else {
                    out += c;
                }
        }
    }
    return out + "\"";
}

}  // namespace yoloworld
