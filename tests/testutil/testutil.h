// What the tests share (test-only; never linked into a binary that ships):
// temporary folders that are removed, the development PKI, source paths,
// a HasReason matcher and builders of the messages and configs tests use.
#pragma once

#include <gmock/gmock.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "broker/store/store.h"
#include "core/status.h"
#include "core/types.h"

namespace carebroker::testing {

// A new, empty folder "cb-<tag>-<pid>-<n>" in the system's temporary
// directory. It and everything in it are removed when the test program
// exits (normally or through a failed assertion), so runs leave nothing.
std::string TempDir(absl::string_view tag);

// The dev PKI the dev_pki fixture made (CB_TEST_PKI); a test failure and
// "/nonexistent" when it is missing.
std::string PkiDir();

// A path in the source tree (CB_SOURCE_DIR, "." when unset).
std::string SourcePath(absl::string_view relative);

// `dir`/agreements: the shipped CLD agreement, but with the national data
// opt-out applying (as for a return under s251 support rather than a legal
// duty), so that opted-out people are refused; returns that folder.
std::string CldAgreementWithOptOutApplying(const std::string& dir);

// The `i`th synthetic NHS number (i >= 0) of the 999 test range, Modulus 11
// valid, a different one for each `i` up to a million.
std::string SyntheticNhsNumber(int i);

// A broker config for tests: listens on 127.0.0.1:0 with `data_dir`, the
// dev PKI's TLS and audit keys, the agreements in tests/agreements, the
// organisations RR8, RH8, Y06601, 503, 511 and X26 (or `organisations`,
// a YAML "organisations:" block), and `extra` YAML appended. `extra` may
// replace the tls, policy, audit and metrics blocks by holding its own.
std::string ConfigYaml(const std::string& data_dir, const std::string& extra = "",
                       const std::string& organisations = "");

// A message as the store takes it: opaque JSON under HOSPITAL_DISCHARGE for
// direct care, accepted at `at` and expiring 5 days later. An empty
// `payload` gets a unique small one; every call gets a new local reference.
NewMessage TestMessage(const OrgCode& from, const OrgCode& to, std::string idempotency_key = "",
                       std::string payload = "", absl::Time at = absl::FromUnixSeconds(1'800'000'000));

namespace internal {
inline const absl::Status& StatusOf(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& s) {
  return s.status();
}
}  // namespace internal

// Matches an absl::Status, or an absl::StatusOr's status, whose reason code
// (core/status.h) is `reason`.
MATCHER_P(HasReason, reason, absl::StrCat(negation ? "has no" : "has", " reason ", reason)) {
  const absl::Status& s = ::carebroker::testing::internal::StatusOf(arg);
  const std::string got = ReasonOf(s);
  if (got != reason) *result_listener << "whose status is " << s;
  return got == reason;
}

}  // namespace carebroker::testing
