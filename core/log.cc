#include "core/log.h"

#include <unistd.h>

#include <atomic>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/reasons.h"
#include "core/status.h"

namespace carebroker {
namespace {

struct Sink {
  absl::Mutex mu;
  std::string program ABSL_GUARDED_BY(mu) = "carebroker";
  std::vector<std::string>* captured ABSL_GUARDED_BY(mu) = nullptr;
};

Sink& TheSink() {
  static Sink* const sink = new Sink();  // never destroyed: logging may outlive statics
  return *sink;
}

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

void Write(const std::string& line) {
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n <= 0) return;  // nowhere else to report it
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace

absl::StatusOr<LogLevel> LogLevelFromName(absl::string_view name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "debug") return LogLevel::kDebug;
  if (n == "info") return LogLevel::kInfo;
  if (n == "warning" || n == "warn") return LogLevel::kWarning;
  if (n == "error") return LogLevel::kError;
  return InvalidArgument(reason::kConfigInvalid, "a log level is debug, info, warning or error");
}

absl::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level), std::memory_order_relaxed); }

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed); }

void SetLogProgram(absl::string_view program) {
  Sink& s = TheSink();
  absl::MutexLock l(&s.mu);
  s.program = std::string(program);
}

LogEvent::LogEvent(LogLevel level, absl::string_view event)
    : on_(LogEnabled(level)), level_(level), event_(on_ ? std::string(event) : std::string()) {}

LogEvent& LogEvent::Str(absl::string_view key, absl::string_view value) {
  if (on_) fields_.push_back({Field::kText, std::string(key), std::string(value)});
  return *this;
}

LogEvent& LogEvent::Int(absl::string_view key, int64_t value) {
  if (on_) fields_.push_back({Field::kInt, std::string(key), {}, value});
  return *this;
}

LogEvent& LogEvent::Ms(absl::string_view key, absl::Duration value) {
  // Microseconds: a latency is never quoted finer than that.
  if (on_) {
    const double ms = static_cast<double>(absl::ToInt64Microseconds(value)) / 1000.0;
    fields_.push_back({Field::kReal, absl::StrCat(key, "_ms"), {}, 0, ms});
  }
  return *this;
}

LogEvent& LogEvent::Msg(absl::string_view text) {
  if (on_) message_ = std::string(text);
  return *this;
}

LogEvent::~LogEvent() {
  if (!on_) return;
  Sink& s = TheSink();
  nlohmann::ordered_json line;
  line["time"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  line["level"] = std::string(LogLevelName(level_));
  {
    absl::MutexLock l(&s.mu);
    line["program"] = s.program;
  }
  line["event"] = event_;
  for (Field& f : fields_) {
    switch (f.kind) {
      case Field::kText:
        line[f.key] = std::move(f.text);
        break;
      case Field::kInt:
        line[f.key] = f.integer;
        break;
      case Field::kReal:
        line[f.key] = f.real;
        break;
    }
  }
  if (!message_.empty()) line["message"] = std::move(message_);
  // Invalid UTF-8 (bytes from a peer) is replaced, never passed through.
  std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  absl::MutexLock l(&s.mu);
  if (s.captured != nullptr) {
    s.captured->push_back(std::move(text));
    return;
  }
  text.push_back('\n');
  Write(text);
}

LogCapture::LogCapture() {
  Sink& s = TheSink();
  absl::MutexLock l(&s.mu);
  s.captured = new std::vector<std::string>();
}

LogCapture::~LogCapture() {
  Sink& s = TheSink();
  absl::MutexLock l(&s.mu);
  delete s.captured;
  s.captured = nullptr;
}

std::vector<std::string> LogCapture::lines() const {
  Sink& s = TheSink();
  absl::MutexLock l(&s.mu);
  return s.captured != nullptr ? *s.captured : std::vector<std::string>();
}

}  // namespace carebroker
