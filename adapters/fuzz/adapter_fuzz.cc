// libFuzzer target for one adapter (CB_FUZZ_FORMAT names it at compile
// time): any input either parses to a record or is refused with a status,
// never a crash, a hang or undefined behaviour; a record that parses is then
// rendered in every format, which must not crash either. The same input is
// read as a declared document too (a FHIR one, and a multipart manifest).
#include <cstddef>
#include <cstdint>

#include "adapters/documents.h"
#include "adapters/formats.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace carebroker::adapters;
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  (void)ReadDocument(InfoOf(Format::CB_FUZZ_FORMAT).content_type, input);
  (void)ReadDocument("multipart/mixed; boundary=\"cb\"", input);
  for (bool keep : {false, true}) {
    auto record = Parse(Format::CB_FUZZ_FORMAT, input, {.keep_invalid_nhs_numbers = keep});
    if (!record.ok()) continue;
    const Envelope env{"0123456789abcdef0123456789abcdef", "RR8", "503", absl::FromUnixSeconds(1'795'000'000)};
    for (const FormatInfo& f : Formats()) {
      auto out = Render(f.format, *record, env);
      if (out.ok() && f.format != Format::kCanonical) (void)Parse(f.format, *out, {.keep_invalid_nhs_numbers = true});
    }
  }
  return 0;
}
