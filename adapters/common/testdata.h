// Inputs of the adapters' tests and benchmarks, read from the source tree
// (CB_SOURCE_DIR, which ctest sets; "." otherwise).
#pragma once

#include <string>

namespace carebroker::adapters {

std::string SourceDir();
// The public sample files (CB_SAMPLES_DIR, which ctest sets from CMake's
// CB_SAMPLES_DIR; <source>/tests/data/samples otherwise).
std::string SamplesDir();
// The whole file; a file that cannot be read stops the process with its
// name (a test cannot go on without its input).
std::string ReadOrDie(const std::string& path);
// adapters/testdata/<rel>, e.g. Testdata("hl7v2/adt_a03.hl7").
std::string Testdata(const std::string& rel);

}  // namespace carebroker::adapters
