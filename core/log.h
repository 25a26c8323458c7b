// The one log sink: one JSON object per line on stderr, for journald and
// container runtimes.
//
//   Log(LogLevel::kInfo, "policy.reloaded").Int("agreements", 5).Str("digest", d)
//       .Msg("policy reloaded");
//
// writes, when the statement ends,
//
//   {"time":"2026-12-06T13:30:00.123Z","level":"info","program":"carebroker",
//    "event":"policy.reloaded","agreements":5,"digest":"…","message":"policy reloaded"}
//
// Fields keep the order they were added in; "message" (when given) comes
// last. A statement below the level in force (SetLogLevel; config key
// log.level) costs a comparison and writes nothing. Library code logs
// through here and never writes to stderr itself, so a test can capture
// what an operator would see (LogCapture). Thread-safe; a line is written
// whole with one write.
//
// Nothing logged may hold patient data: message ids, ODS codes, workflows,
// reasons, counts and latencies only. Error texts that can quote a record
// (an adapter's parse error) are not logged; their reason code is.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace carebroker {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// "debug", "info", "warning" (or "warn"), "error"; INVALID_ARGUMENT otherwise.
absl::StatusOr<LogLevel> LogLevelFromName(absl::string_view name);
absl::string_view LogLevelName(LogLevel level);

// The least severe level written (default info).
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);

// The "program" of every line ("carebroker" unless a main sets another).
void SetLogProgram(absl::string_view program);

// One log line, built field by field and written when it is destroyed.
class LogEvent {
 public:
  LogEvent(LogLevel level, absl::string_view event);
  ~LogEvent();
  LogEvent(const LogEvent&) = delete;
  LogEvent& operator=(const LogEvent&) = delete;

  LogEvent& Str(absl::string_view key, absl::string_view value);
  LogEvent& Int(absl::string_view key, int64_t value);
  // A latency, as "<key>_ms" with microsecond precision.
  LogEvent& Ms(absl::string_view key, absl::Duration value);
  LogEvent& Msg(absl::string_view text);

 private:
  struct Field {
    enum Kind { kText, kInt, kReal } kind;
    std::string key;
    std::string text;
    int64_t integer = 0;
    double real = 0;
  };
  bool on_;
  LogLevel level_;
  std::string event_;
  std::vector<Field> fields_;
  std::string message_;
};

inline LogEvent Log(LogLevel level, absl::string_view event) { return LogEvent(level, event); }

// While one lives, lines go to it instead of stderr (one at a time; for
// tests).
class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
  // Every line written since construction, as the JSON text.
  std::vector<std::string> lines() const;
};

}  // namespace carebroker
