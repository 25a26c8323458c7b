// Parse-and-map throughput of each adapter: bytes of input turned into a
// canonical CareRecord per second (bytes/s), and rendering the other way.
// Inputs are the synthetic fixtures in adapters/testdata, and a CLD file of
// 1,000 rows made from one. Prints Google Benchmark figures.
//
//   CB_SOURCE_DIR=. build/tests/bench/adapter_bench --benchmark_min_time=1
#include <benchmark/benchmark.h>

#include "adapters/cld/cld.h"
#include "adapters/common/testdata.h"
#include "adapters/formats.h"

namespace carebroker::adapters {
namespace {

const v1::CareRecord& Discharge() {
  static const v1::CareRecord r = *Parse(Format::kHl7v2, Testdata("hl7v2/adt_a03.hl7"));
  return r;
}

const Envelope& Env() {
  static const Envelope e{"0123456789abcdef0123456789abcdef", "RR8", "503", absl::FromUnixSeconds(1'795'000'000)};
  return e;
}

// One input per format, in that format's own words.
std::string Input(Format f) {
  switch (f) {
    case Format::kHl7v2: return Testdata("hl7v2/adt_a03.hl7");
    case Format::kCld: {
      // 1,000 rows of one person's services: a council's file, not one row.
      const v1::CareRecord one = *Parse(Format::kCouncilJson, Testdata("council/care_package.json"));
      cld::Submission s{"503", "2026-10-01", "2026-12-31", {}};
      for (int i = 0; i < 1000; ++i) {
        v1::CareRecord r = one;
        r.mutable_person()->mutable_local_identifiers(0)->set_value("LAS-" + std::to_string(i));
        r.mutable_person()->clear_nhs_number();
        s.people.push_back(std::move(r));
      }
      return *cld::WriteCld(s);
    }
    default: return *Render(f, Discharge(), Env());
  }
}

void BM_Parse(benchmark::State& state, Format f) {
  const std::string input = Input(f);
  for (auto _ : state) {
    if (f == Format::kCld) {
      auto s = cld::ReadCld(input);
      benchmark::DoNotOptimize(s);
    } else {
      auto r = Parse(f, input);
      benchmark::DoNotOptimize(r);
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * input.size()));
  state.counters["input_bytes"] = static_cast<double>(input.size());
}

void BM_Render(benchmark::State& state, Format f) {
  size_t bytes = 0;
  for (auto _ : state) {
    auto out = Render(f, Discharge(), Env());
    bytes += out->size();
    benchmark::DoNotOptimize(out);
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
}

BENCHMARK_CAPTURE(BM_Parse, hl7v2, Format::kHl7v2);
BENCHMARK_CAPTURE(BM_Parse, fhir, Format::kFhir);
BENCHMARK_CAPTURE(BM_Parse, council_json, Format::kCouncilJson);
BENCHMARK_CAPTURE(BM_Parse, cld_1000_rows, Format::kCld);
// FHIR XML: UK Core's published Patient example (tests/data/samples, or
// CB_SAMPLES_DIR), read through expat into the JSON form.
void BM_ParseFhirXml(benchmark::State& state) {
  const std::string input = ReadOrDie(SamplesDir() + "/fhir/ukcore/UKCore-Patient-RichardSmith-Example.xml");
  for (auto _ : state) {
    auto r = Parse(Format::kFhir, input);
    benchmark::DoNotOptimize(r);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * input.size()));
  state.counters["input_bytes"] = static_cast<double>(input.size());
}
BENCHMARK(BM_ParseFhirXml);

BENCHMARK_CAPTURE(BM_Render, hl7v2, Format::kHl7v2);
BENCHMARK_CAPTURE(BM_Render, fhir, Format::kFhir);
BENCHMARK_CAPTURE(BM_Render, council_json, Format::kCouncilJson);

}  // namespace
}  // namespace carebroker::adapters

BENCHMARK_MAIN();
