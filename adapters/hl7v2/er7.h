// HL7 v2 messages in ER7 (the pipe-and-hat encoding), read defensively:
// the input comes from hospital systems over the network and is hostile
// until parsed.
//
// Parse() takes the encoding characters from MSH-1 and MSH-2, splits
// segments on CR, LF or CRLF, converts the text to UTF-8 according to
// MSH-18 (ASCII, 8859/1, UNICODE UTF-8) and keeps each segment's fields as
// they arrived. Get() then splits a field into repetitions, components and
// sub-components and resolves escape sequences (\F\ \S\ \T\ \R\ \E\,
// \Xhh..\, \.br\) for the one value asked for. Errors name the segment
// and field, never the value (it may be patient data).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace carebroker::hl7 {

enum class Charset { kAscii, kLatin1, kUtf8 };

struct Encoding {
  Charset charset = Charset::kAscii;  // MSH-18, as the message declared it
  char field = '|';
  char component = '^';
  char repetition = '~';
  char escape = '\\';
  char subcomponent = '&';
};

struct Limits {
  size_t max_bytes = 16 << 20;
  size_t max_segments = 10000;
  size_t max_fields = 500;  // per segment
};

class Segment {
 public:
  // Three characters, e.g. "PID".
  absl::string_view id() const { return id_; }

  // Whether field n (HL7 numbering from 1) is present and not empty.
  bool Has(int field) const { return !Raw(field).empty(); }
  // The number of repetitions of field n (0 when empty).
  int Repetitions(int field) const;

  // One value, unescaped, in UTF-8: field n, repetition `rep` (from 0),
  // component and sub-component (from 1). "" when absent. The field's
  // escape sequences were checked by Parse(), so this cannot fail.
  std::string Get(int field, int component = 1, int sub = 1, int rep = 0) const;

  // The field as it arrived (escaped). MSH-1 is the field separator and
  // MSH-2 the encoding characters, as in the standard.
  absl::string_view Raw(int field) const;

 private:
  friend class Message;
  absl::string_view id_;
  const absl::string_view* fields_ = nullptr;  // in the message's field table; [0] is the segment id
  size_t field_count_ = 0;
  const Encoding* enc_ = nullptr;
  bool msh_ = false;
};

class Message {
 public:
  static absl::StatusOr<Message> Parse(absl::string_view er7, const Limits& limits = {});

  const Encoding& encoding() const { return body_->enc; }
  const std::vector<Segment>& segments() const { return segments_; }
  // The first segment with this id, or null.
  const Segment* Find(absl::string_view id) const;
  // Every segment with this id, in order.
  std::vector<const Segment*> FindAll(absl::string_view id) const;
  const Segment& msh() const { return segments_.front(); }

 private:
  // On the heap, so segments' views stay valid when a Message moves.
  struct Body {
    std::string text;  // UTF-8
    Encoding enc;
    std::vector<absl::string_view> fields;  // every segment's fields, in order
  };
  Message() = default;

  std::unique_ptr<Body> body_;
  std::vector<Segment> segments_;
};

// The value of `raw` (one component or sub-component, still escaped) with
// its escape sequences resolved; INVALID_ARGUMENT for a malformed or
// unknown one.
absl::StatusOr<std::string> Unescape(absl::string_view raw, const Encoding& enc);

// `value` escaped so that it reads back as itself in any position.
std::string Escape(absl::string_view value, const Encoding& enc);

}  // namespace carebroker::hl7
