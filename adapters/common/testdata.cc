#include "adapters/common/testdata.h"

#include <cstdio>
#include <cstdlib>

#include "core/files.h"

namespace carebroker::adapters {

std::string SourceDir() {
  const char* dir = std::getenv("CB_SOURCE_DIR");
  return dir != nullptr && *dir != 0 ? dir : ".";
}

std::string SamplesDir() {
  const char* dir = std::getenv("CB_SAMPLES_DIR");
  return dir != nullptr && *dir != 0 ? dir : SourceDir() + "/tests/data/samples";
}

std::string ReadOrDie(const std::string& path) {
  auto text = ReadFileToString(path, "test input");
  if (!text.ok()) {
    std::fprintf(stderr, "%s (set CB_SOURCE_DIR to the source tree)\n", std::string(text.status().message()).c_str());
    std::abort();
  }
  return *std::move(text);
}

std::string Testdata(const std::string& rel) { return ReadOrDie(SourceDir() + "/adapters/testdata/" + rel); }

}  // namespace carebroker::adapters
