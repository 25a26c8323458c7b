// The one log sink: a line on stderr, "<program>: <text>". Library code logs
// through it and never writes to stderr itself, so a test can capture what an
// operator would see. Nothing logged may hold patient data: ids, ODS codes,
// reasons and counts only. Thread-safe; a line is written whole.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace carebroker {

// The prefix of every line ("carebroker" unless a main sets another).
void SetLogProgram(absl::string_view program);

// Writes `text` as one line (a trailing newline in `text` is not doubled).
void LogLine(absl::string_view text);

template <typename... Args>
void Logf(const absl::FormatSpec<Args...>& format, const Args&... args) {
  LogLine(absl::StrFormat(format, args...));
}

// While one lives, lines go to it instead of stderr (one at a time; for
// tests).
class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
  // Every line logged since construction, without the program prefix.
  std::vector<std::string> lines() const;
};

}  // namespace carebroker
