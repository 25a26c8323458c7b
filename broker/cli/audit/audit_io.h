// What every carebroker-audit command shares: the options, reading the log
// (from the broker, an export file or a store), selecting entries by a
// filter, and printing rows as a table, CSV or JSON.
#pragma once

#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "audit/verify.h"
#include "broker/client/client.h"
#include "carebroker/v1/audit.grpc.pb.h"

namespace carebroker::audit_cli {

struct Options {
  ClientTls tls;
  std::string export_file, store_file, public_key, subject_key, format = "table";
  std::string out_file;                   // a document's file (html, pdf)
  std::string chromium = "chromium", dot = "dot";  // the programs that print and draw
  double timeout_s = 300;
  bool offline() const { return !export_file.empty() || !store_file.empty(); }
};

absl::StatusOr<std::unique_ptr<v1::Audit::Stub>> Connect(const Options& o);
void Deadline(grpc::ClientContext& ctx, const Options& o);

// Prints a failure: returns exit 1 when the broker refused or failed, 2 for
// bad usage or unreadable input.
int Failed(std::ostream& err, const absl::Status& s);
int Refused(std::ostream& err, const grpc::Status& s);

// The whole log, as it is read: from the file given, or exported from the broker.
absl::Status ReadLog(const Options& o, audit::LogVisitor& visitor);
absl::StatusOr<audit::LogCopy> LoadLog(const Options& o);
absl::StatusOr<audit::Key> PublicKey(const Options& o);

// The whole log, verified with the public key: refused (UNAVAILABLE, exit 1)
// when it is not intact. `report` says what the verification covered.
struct VerifiedLog {
  audit::LogCopy log;
  audit::VerifyReport report;
  v1::SignedTreeHead latest;  // the largest signed head (tree_size 0: none)
};
absl::StatusOr<VerifiedLog> LoadVerifiedLog(const Options& o);

// Entries matching `f`: the broker filters (and records the query) online;
// offline, the same filter runs here (an NHS number needs --subject-key).
absl::StatusOr<std::vector<v1::AuditEntry>> Select(const Options& o, v1::AuditFilter f, uint32_t limit);

// What became of the CLD submissions whose rows `about` (one person's
// entries) names: their SEND_ACCEPTED entry (written when the last chunk
// is in: none while it uploads or if it never completes), deliveries,
// acknowledgements, expiry, holds and operators' actions, which name no
// person (a submission is about many).
// Empty when `about` holds no ROW_RELEASED entry.
absl::StatusOr<std::vector<v1::AuditEntry>> SelectSubmissionFates(const Options& o,
                                                                  const std::vector<v1::AuditEntry>& about);

// Every safeguarding override (its SEND_ACCEPTED entry, or a CLD row's
// ROW_RELEASED) with its latest
// review (an OVERRIDE_REVIEWED entry; index 0 when none), oldest first.
absl::StatusOr<std::vector<std::pair<v1::AuditEntry, v1::AuditEntry>>> SelectOverrides(const Options& o);

// Sets the filter's from (inclusive) and until (exclusive) from RFC 3339
// times; an empty one is left open. INVALID_ARGUMENT naming a bad time.
absl::Status SetPeriod(const std::string& from, const std::string& until, v1::AuditFilter* f);

// Every one of `entries` is, byte for byte, the entry at its index in
// `log`; otherwise FAILED_PRECONDITION naming the first that is not.
absl::Status CheckEntriesInLog(const std::vector<v1::AuditEntry>& entries, const audit::LogCopy& log);

std::string Time(const google::protobuf::Timestamp& t);  // RFC 3339, UTC
std::string Event(int e);                                 // send-accepted
std::string Basis(const v1::LegalBasis& b);               // art6 ...; art9 ...; statute

// Prints rows as an aligned table, CSV (RFC 4180 quoting) or JSON (o.format).
void Print(const Options& o, const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows,
           std::ostream& out);

}  // namespace carebroker::audit_cli
