#include "core/log.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"

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

}  // namespace

void SetLogProgram(absl::string_view program) {
  Sink& s = TheSink();
  absl::MutexLock l(&s.mu);
  s.program = std::string(program);
}

void LogLine(absl::string_view text) {
  absl::ConsumeSuffix(&text, "\n");
  Sink& s = TheSink();
  absl::MutexLock l(&s.mu);
  if (s.captured != nullptr) {
    s.captured->emplace_back(text);
    return;
  }
  const std::string line = absl::StrCat(s.program, ": ", text, "\n");
  std::fwrite(line.data(), 1, line.size(), stderr);
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
