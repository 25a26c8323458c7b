#include <CLI/CLI.hpp>

#include "adapters/formats.h"
#include "broker/cli/ctl/commands.h"
#include "core/files.h"
#include "core/ids.h"
#include "core/status.h"

namespace carebroker::ctl {
namespace {

// convert --from F --to T FILE: the adapters offline, no broker. Prints the
// result, or the precise error (exit 1); bad arguments exit 2.
struct ConvertArgs {
  std::string from, to, file, sender = "SENDER", recipient = "RECIPIENT";
  bool keep_invalid_nhs = false;
};

int DoConvert(const ConvertArgs& a, std::ostream& out, std::ostream& err) {
  auto from = adapters::FormatByName(a.from);
  auto to = adapters::FormatByName(a.to);
  if (!from.ok() || !to.ok()) {
    err << "carebrokerctl convert: " << (from.ok() ? to.status() : from.status()).message() << "\n";
    return 2;
  }
  auto bytes = ReadFileToString(a.file, "FILE");
  if (!bytes.ok()) {
    err << "carebrokerctl convert: " << bytes.status().message() << "\n";
    return 2;
  }
  auto record = adapters::Parse(*from, *bytes, {.keep_invalid_nhs_numbers = a.keep_invalid_nhs});
  if (!record.ok()) {
    err << a.file << ": " << ReasonOf(record.status()) << ": " << record.status().message() << "\n";
    return 1;
  }
  const absl::Time now = absl::Now();
  auto rendered = adapters::Render(*to, *record, {NewMessageId(now).str(), a.sender, a.recipient, now});
  if (!rendered.ok()) {
    err << a.file << ": " << ReasonOf(rendered.status()) << ": " << rendered.status().message() << "\n";
    return 1;
  }
  out << *rendered;
  if (!rendered->empty() && rendered->back() != '\n' && *to != adapters::Format::kCanonical) out << "\n";
  return 0;
}

}  // namespace

void AddConvertCommands(CLI::App& app, Run& run) {
  auto a = std::make_shared<ConvertArgs>();
  auto* convert = app.add_subcommand("convert", "translate a file between formats offline, to check a mapping");
  std::vector<std::string> format_names;
  for (const auto& f : adapters::Formats()) format_names.emplace_back(f.name);
  convert->add_option("--from", a->from, "format of FILE")->required()->check(CLI::IsMember(format_names));
  convert->add_option("--to", a->to, "format to print")->required()->check(CLI::IsMember(format_names));
  convert->add_option("--sender", a->sender, "ODS code for the envelope (FHIR MessageHeader, HL7 MSH, CLD LA Code)");
  convert->add_option("--recipient", a->recipient, "ODS code for the envelope");
  convert->add_flag("--keep-invalid-nhs-number", a->keep_invalid_nhs,
                    "keep an NHS number failing Modulus 11 (as an agreement accepting unverified identifiers would)");
  convert->add_option("FILE", a->file, "input file")->required()->check(CLI::ExistingFile);
  convert->callback([&run, a] { run.Offline([&run, a] { return DoConvert(*a, run.out, run.err); }); });
}

}  // namespace carebroker::ctl
