#include "adapters/hl7v2/er7.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/status.h"
#include "core/reasons.h"

namespace carebroker::hl7 {
namespace {

absl::Status Invalid(absl::string_view what) { return InvalidArgument(reason::kHl7Invalid, what); }

// The piece `index` (from 0) of `s` split on `sep`; "" when there is none.
// Values are short: a plain loop beats a call to memchr per piece.
absl::string_view Piece(absl::string_view s, char sep, int index) {
  if (index < 0) return {};
  const char* p = s.data();
  const char* const end = p + s.size();
  for (int i = 0; i < index; ++i) {
    while (p != end && *p != sep) ++p;
    if (p == end) return {};
    ++p;
  }
  const char* q = p;
  while (q != end && *q != sep) ++q;
  return absl::string_view(p, static_cast<size_t>(q - p));
}

// Repetition `rep` (from 0), component and sub-component (from 1) of a
// field, in one pass that stops at the end of the piece asked for; "" when
// there is none.
absl::string_view Locate(absl::string_view raw, const Encoding& enc, int rep, int component, int sub) {
  if (rep < 0 || component < 1 || sub < 1) return {};
  int r = 0, c = 1, s = 1;
  const char* start = raw.data();
  const char* const end = start + raw.size();
  for (const char* p = start;; ++p) {
    const bool at_end = p == end;
    const char ch = at_end ? '\0' : *p;
    if (!at_end && ch != enc.repetition && ch != enc.component && ch != enc.subcomponent) continue;
    if (r == rep && c == component && s == sub) return absl::string_view(start, static_cast<size_t>(p - start));
    if (at_end) return {};
    if (ch == enc.repetition) {
      if (r == rep) return {};
      ++r, c = 1, s = 1;
    } else if (ch == enc.component) {
      if (r == rep && c == component) return {};
      ++c, s = 1;
    } else {
      ++s;
    }
    start = p + 1;
  }
}

void AppendUtf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// The length of the valid UTF-8 prefix of `s` (s.size() when all valid).
size_t ValidUtf8Prefix(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp, min;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return i;
    }
    if (i + n >= s.size()) return i;  // cut short
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += n + 1;
  }
  return i;
}

// `bytes` (in the message's character set) as UTF-8, or an error.
absl::StatusOr<std::string> ToUtf8(absl::string_view bytes, Charset charset, absl::string_view where) {
  switch (charset) {
    case Charset::kAscii: {
      unsigned char high = 0;  // a branch-free scan first; the offending byte only on failure
      for (char c : bytes) high |= static_cast<unsigned char>(c);
      if (high >= 0x80) {
        for (size_t i = 0; i < bytes.size(); ++i) {
          if (static_cast<unsigned char>(bytes[i]) >= 0x80) {
            return Invalid(absl::StrCat(where, "byte ", i, " is not ASCII, and MSH-18 declares ASCII (or nothing)"));
          }
        }
      }
      return std::string(bytes);
    }
    case Charset::kLatin1: {
      std::string out;
      out.reserve(bytes.size() + bytes.size() / 8);
      for (char c : bytes) AppendUtf8(static_cast<unsigned char>(c), out);
      return out;
    }
    case Charset::kUtf8:
      if (size_t ok = ValidUtf8Prefix(bytes); ok != bytes.size()) {
        return Invalid(absl::StrCat(where, "byte ", ok, " is not valid UTF-8, and MSH-18 declares UNICODE UTF-8"));
      }
      return std::string(bytes);
  }
  return Invalid("unknown character set");
}

bool IsHex(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

int HexValue(char c) { return std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : (std::tolower(c) - 'a' + 10); }

// What one escape sequence (the text between the escape characters) stands
// for, appended to `out`.
absl::Status ResolveEscape(absl::string_view seq, const Encoding& enc, std::string& out) {
  if (seq == "F") {
    out.push_back(enc.field);
  } else if (seq == "S") {
    out.push_back(enc.component);
  } else if (seq == "T") {
    out.push_back(enc.subcomponent);
  } else if (seq == "R") {
    out.push_back(enc.repetition);
  } else if (seq == "E") {
    out.push_back(enc.escape);
  } else if (seq == ".br" || seq == ".sp") {
    out.push_back('\n');
  } else if (seq == "H" || seq == "N" || seq == ".fi" || seq == ".nf" || seq == ".ce" ||
             absl::StartsWith(seq, ".in") || absl::StartsWith(seq, ".ti") || absl::StartsWith(seq, ".sk")) {
    // Display formatting (highlight, fill, indent): no text.
  } else if (seq.size() >= 3 && seq[0] == 'X' && (seq.size() - 1) % 2 == 0) {
    std::string bytes;
    for (size_t i = 1; i < seq.size(); i += 2) {
      if (!IsHex(seq[i]) || !IsHex(seq[i + 1])) return Invalid("an \\X..\\ escape holds a character that is not hex");
      bytes.push_back(static_cast<char>(HexValue(seq[i]) * 16 + HexValue(seq[i + 1])));
    }
    auto utf8 = ToUtf8(bytes, enc.charset, "an \\X..\\ escape: ");
    if (!utf8.ok()) return utf8.status();
    out += *utf8;
  } else if (!seq.empty() && (seq[0] == 'C' || seq[0] == 'M')) {
    return Invalid("character set switching escapes (\\C..\\, \\M..\\) are not supported; use MSH-18");
  } else {
    return Invalid("an unknown escape sequence");
  }
  return absl::OkStatus();
}

absl::Status CheckEscapes(absl::string_view raw, const Encoding& enc) {
  std::string scratch;
  for (size_t i = raw.find(enc.escape); i != absl::string_view::npos; i = raw.find(enc.escape, i)) {
    const size_t end = raw.find(enc.escape, i + 1);
    if (end == absl::string_view::npos) return Invalid("an escape sequence is not terminated");
    scratch.clear();
    if (auto s = ResolveEscape(raw.substr(i + 1, end - i - 1), enc, scratch); !s.ok()) return s;
    i = end + 1;
  }
  return absl::OkStatus();
}

absl::StatusOr<Charset> CharsetOf(absl::string_view msh18) {
  const std::string name = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(msh18));
  if (name.empty() || name == "ASCII") return Charset::kAscii;
  if (name == "8859/1") return Charset::kLatin1;
  if (name == "UNICODE UTF-8" || name == "UNICODE" || name == "UTF-8") return Charset::kUtf8;
  std::string shown;
  for (char c : name.substr(0, 20)) shown.push_back(absl::ascii_isprint(static_cast<unsigned char>(c)) ? c : '?');
  return Invalid(absl::StrCat("MSH-18: character set \"", shown,
                              "\" is not supported (ASCII, 8859/1 or UNICODE UTF-8)"));
}

}  // namespace

absl::StatusOr<std::string> Unescape(absl::string_view raw, const Encoding& enc) {
  std::string out;
  out.reserve(raw.size());
  size_t i = 0;
  while (i < raw.size()) {
    const size_t esc = raw.find(enc.escape, i);
    if (esc == absl::string_view::npos) {
      out.append(raw.data() + i, raw.size() - i);
      break;
    }
    out.append(raw.data() + i, esc - i);
    const size_t end = raw.find(enc.escape, esc + 1);
    if (end == absl::string_view::npos) return Invalid("an escape sequence is not terminated");
    if (auto s = ResolveEscape(raw.substr(esc + 1, end - esc - 1), enc, out); !s.ok()) return s;
    i = end + 1;
  }
  return out;
}

std::string Escape(absl::string_view value, const Encoding& enc) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == enc.escape) {
      out += {enc.escape, 'E', enc.escape};
    } else if (c == enc.field) {
      out += {enc.escape, 'F', enc.escape};
    } else if (c == enc.component) {
      out += {enc.escape, 'S', enc.escape};
    } else if (c == enc.subcomponent) {
      out += {enc.escape, 'T', enc.escape};
    } else if (c == enc.repetition) {
      out += {enc.escape, 'R', enc.escape};
    } else if (c == '\n') {
      out += {enc.escape, '.', 'b', 'r', enc.escape};
    } else if (c == '\r') {
      out += {enc.escape, 'X', '0', 'D', enc.escape};
    } else {
      out.push_back(c);
    }
  }
  return out;
}

absl::string_view Segment::Raw(int field) const {
  if (field < 1) return {};
  if (msh_) {  // MSH: field 1 is the separator itself
    if (field == 1) return absl::string_view(&enc_->field, 1);
    field -= 1;
  }
  return static_cast<size_t>(field) < field_count_ ? fields_[field] : absl::string_view();
}

int Segment::Repetitions(int field) const {
  const absl::string_view raw = Raw(field);
  if (raw.empty()) return 0;
  if (msh_ && field <= 2) return 1;
  int n = 1;
  for (char c : raw) n += c == enc_->repetition;
  return n;
}

std::string Segment::Get(int field, int component, int sub, int rep) const {
  const absl::string_view raw = Raw(field);
  if (msh_ && field <= 2) return component == 1 && sub == 1 && rep == 0 ? std::string(raw) : "";
  const absl::string_view value = Locate(raw, *enc_, rep, component, sub);
  if (value.empty() || std::memchr(value.data(), enc_->escape, value.size()) == nullptr) {
    return std::string(value);  // the common case
  }
  return Unescape(value, *enc_).value_or("");  // escapes were checked by Parse
}

const Segment* Message::Find(absl::string_view id) const {
  for (const Segment& s : segments_) {
    if (s.id() == id) return &s;
  }
  return nullptr;
}

std::vector<const Segment*> Message::FindAll(absl::string_view id) const {
  std::vector<const Segment*> out;
  for (const Segment& s : segments_) {
    if (s.id() == id) out.push_back(&s);
  }
  return out;
}

absl::StatusOr<Message> Message::Parse(absl::string_view er7, const Limits& limits) {
  if (er7.size() > limits.max_bytes) {
    return Invalid(absl::StrCat("the message is ", er7.size(), " bytes; the limit is ", limits.max_bytes));
  }
  if (absl::StartsWith(er7, "\xEF\xBB\xBF")) er7.remove_prefix(3);  // a UTF-8 byte order mark
  if (er7.size() < 8 || !absl::StartsWith(er7, "MSH")) return Invalid("the message does not start with an MSH segment");

  Message m;
  m.body_ = std::make_unique<Body>();
  Encoding& enc = m.body_->enc;
  enc.field = er7[3];
  const size_t msh2_end = er7.find(enc.field, 4);
  const absl::string_view msh2 = er7.substr(4, msh2_end == absl::string_view::npos ? 0 : msh2_end - 4);
  if (msh2.size() < 4 || msh2.size() > 5) {
    return Invalid("MSH-2: the encoding characters must be 4 (or 5) characters, e.g. ^~\\&");
  }
  enc.component = msh2[0];
  enc.repetition = msh2[1];
  enc.escape = msh2[2];
  enc.subcomponent = msh2[3];
  const std::string delimiters = {enc.field, enc.component, enc.repetition, enc.escape, enc.subcomponent};
  for (size_t i = 0; i < delimiters.size(); ++i) {
    const auto c = static_cast<unsigned char>(delimiters[i]);
    if (absl::ascii_isalnum(c) || c == '\r' || c == '\n' || c < 0x20 || c >= 0x7F ||
        delimiters.find(delimiters[i], i + 1) != std::string::npos) {
      return Invalid("MSH-1/MSH-2: the delimiters must be five distinct printable punctuation characters");
    }
  }

  // The character set, from MSH-18 of the first line, before anything else is read.
  const absl::string_view first_line = er7.substr(0, er7.find_first_of("\r\n"));
  auto charset = CharsetOf(Piece(Piece(Piece(first_line, enc.field, 17), enc.repetition, 0), enc.component, 0));
  if (!charset.ok()) return charset.status();
  enc.charset = *charset;
  auto text = ToUtf8(er7, enc.charset, "");
  if (!text.ok()) return text.status();
  m.body_->text = *std::move(text);

  // One pass over the text: segments end at CR or LF (empty lines skipped),
  // fields at the field separator. Fields go to one table for the whole
  // message; only lines holding the escape character have escapes checked.
  const absl::string_view all = m.body_->text;
  std::vector<absl::string_view>& table = m.body_->fields;
  table.reserve(std::min<size_t>(static_cast<size_t>(std::count(all.begin(), all.end(), enc.field)) + 64, 1 << 16));
  m.segments_.reserve(16);
  // Bytes that end a field (1) or a line (2); everything else is 0.
  std::array<uint8_t, 256> stop{};
  stop[static_cast<unsigned char>(enc.field)] = 1;
  stop['\r'] = stop['\n'] = 2;
  const char* p = all.data();
  const char* const end = p + all.size();
  while (p != end) {
    if (*p == '\r' || *p == '\n') {
      ++p;
      continue;
    }
    const size_t n = m.segments_.size() + 1;
    if (n > limits.max_segments) return Invalid(absl::StrCat("more than ", limits.max_segments, " segments"));
    const char* const line_start = p;
    const size_t first = table.size();
    for (const char* field_start = p;; field_start = ++p) {
      while (p != end && stop[static_cast<unsigned char>(*p)] == 0) ++p;
      table.emplace_back(field_start, static_cast<size_t>(p - field_start));
      if (p == end || stop[static_cast<unsigned char>(*p)] == 2) break;
      if (table.size() - first > limits.max_fields + 1) break;  // too many: reported below
    }
    while (p != end && *p != '\r' && *p != '\n') ++p;  // past a line cut short by the limit
    const absl::string_view line(line_start, static_cast<size_t>(p - line_start));
    const bool escapes = !line.empty() && std::memchr(line.data(), enc.escape, line.size()) != nullptr;
    const size_t count = table.size() - first;
    const absl::string_view id = line.substr(0, 3);
    bool id_ok = id.size() == 3 && (line.size() == 3 || line[3] == enc.field);
    for (char c : id) id_ok = id_ok && (absl::ascii_isupper(static_cast<unsigned char>(c)) || absl::ascii_isdigit(static_cast<unsigned char>(c)));
    if (!id_ok) return Invalid(absl::StrCat("segment ", n, ": does not start with a three-character segment id"));
    const auto where = [&] { return absl::StrCat("segment ", n, " (", id, ") "); };
    const bool is_msh = id == "MSH";
    if (n == 1 && !is_msh) return Invalid("the message does not start with an MSH segment");
    if (n > 1 && is_msh) return Invalid(absl::StrCat(where(), "a second MSH: one message at a time"));
    if (count > limits.max_fields + 1) {  // [0] is the segment id
      return Invalid(absl::StrCat(where(), "has more than ", limits.max_fields, " fields"));
    }
    for (size_t f = 1; escapes && f < count; ++f) {
      if (is_msh && f == 1) continue;  // MSH-2, the encoding characters themselves
      if (auto s = CheckEscapes(table[first + f], enc); !s.ok()) {
        return Invalid(absl::StrCat(where(), "field ", is_msh ? f + 1 : f, ": ", s.message()));
      }
    }
    Segment& seg = m.segments_.emplace_back();
    seg.field_count_ = count;
    seg.id_ = id;
    seg.enc_ = &enc;
    seg.msh_ = is_msh;
  }
  // The table is complete: segments can point into it (in order, one after another).
  const absl::string_view* next = table.data();
  for (Segment& seg : m.segments_) {
    seg.fields_ = next;
    next += seg.field_count_;
  }
  return m;
}

}  // namespace carebroker::hl7
