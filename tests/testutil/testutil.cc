#include "tests/testutil/testutil.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "core/ids.h"
#include "core/sha256.h"

namespace carebroker::testing {
namespace {

namespace fs = std::filesystem;

// The folders TempDir made, removed at exit.
class TempDirs {
 public:
  static TempDirs& Get() {
    static TempDirs dirs;
    return dirs;
  }
  void Add(const fs::path& p) {
    absl::MutexLock l(&mu_);
    paths_.push_back(p);
  }
  ~TempDirs() {
    if (::getpid() != owner_) return;  // a forked child leaves its parent's folders alone
    absl::MutexLock l(&mu_);
    for (const auto& p : paths_) {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  }

 private:
  const pid_t owner_ = ::getpid();
  absl::Mutex mu_;
  std::vector<fs::path> paths_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::string TempDir(absl::string_view tag) {
  static std::atomic<int> n{0};
  TempDirs& dirs = TempDirs::Get();  // constructed first, so destroyed after any user
  const fs::path d = fs::temp_directory_path() / absl::StrCat("cb-", tag, "-", ::getpid(), "-", n++);
  fs::remove_all(d);
  fs::create_directories(d);
  dirs.Add(d);
  return d.string();
}

std::string PkiDir() {
  const char* d = std::getenv("CB_TEST_PKI");
  if (d == nullptr || !fs::exists(fs::path(d) / "ca.crt")) {
    ADD_FAILURE() << "CB_TEST_PKI does not name a dev PKI; run the tests through ctest";
    return "/nonexistent";
  }
  return d;
}

std::string SourcePath(absl::string_view relative) {
  const char* s = std::getenv("CB_SOURCE_DIR");
  return absl::StrCat(s != nullptr ? s : ".", "/", relative);
}

std::string SyntheticNhsNumber(int i) {
  // Seven numbers apart: at most one in eleven has a check of 10 (never issued).
  for (int base = 999000000 + i * 7;; ++base) {
    const std::string nine = absl::StrCat(base);
    int sum = 0;
    for (int d = 0; d < 9; ++d) sum += (nine[d] - '0') * (10 - d);
    const int check = 11 - sum % 11;
    if (check == 10) continue;
    return absl::StrCat(nine, check == 11 ? 0 : check);
  }
}

std::string ConfigYaml(const std::string& data_dir, const std::string& extra, const std::string& organisations) {
  const std::string pki = PkiDir();
  const std::string orgs = organisations.empty() ? R"(
organisations:
  - {ods: RR8, name: Leeds Teaching Hospitals NHS Trust, kind: nhs_trust}
  - {ods: RH8, name: Royal Devon University Healthcare NHS Foundation Trust, kind: nhs_trust}
  - {ods: Y06601, name: Example GP practice, kind: gp_practice}
  - {ods: "503", name: Lincolnshire County Council, kind: local_authority}
  - {ods: "511", name: Example council, kind: local_authority}
  - {ods: X26, name: NHS England, kind: nhs_england}
)"
                                                 : organisations;
  return absl::StrCat("listen: 127.0.0.1:0\n", "data_dir: ", data_dir, "\n",
                      extra.find("tls:") == std::string::npos
                          ? absl::StrCat("tls:\n", "  cert: ", pki, "/server.crt\n", "  key: ", pki,
                                         "/server.key\n", "  ca: ", pki, "/ca.crt\n", "  crl: ", pki, "/crl.pem\n")
                          : "",
                      orgs,
                      extra.find("policy:") == std::string::npos
                          ? absl::StrCat("policy: {agreements_dir: ", SourcePath("tests/agreements"), "}\n")
                          : "",
                      extra.find("audit:") == std::string::npos
                          ? absl::StrCat("audit: {signing_key: ", pki, "/audit-signing.key, subject_key: ", pki,
                                         "/audit-subject.key}\n")
                          : "",
                      // Tests run side by side: each broker's metrics listener on a port of its own.
                      extra.find("metrics:") == std::string::npos ? "metrics: {listen: \"127.0.0.1:0\"}\n" : "",
                      extra);
}

NewMessage TestMessage(const OrgCode& from, const OrgCode& to, std::string idempotency_key, std::string payload,
                       absl::Time at) {
  static std::atomic<int> seq{0};
  const int n = ++seq;
  NewMessage m;
  m.id = NewMessageId(at);
  m.sender = from;
  m.recipient = to;
  m.workflow = "HOSPITAL_DISCHARGE";
  m.purpose = "direct-care";
  m.idempotency_key = std::move(idempotency_key);
  m.content_type = "application/json";
  m.local_reference = absl::StrCat("ref-", n);
  m.payload = payload.empty() ? absl::StrCat("{\"n\":", n, "}") : std::move(payload);
  m.digest = Sha256(m.payload);
  m.accepted_at = at;
  m.expires_at = at + absl::Hours(120);
  return m;
}

std::string CldAgreementWithOptOutApplying(const std::string& dir) {
  const std::string out = dir + "/agreements";
  std::filesystem::create_directories(out);
  std::ifstream shipped(SourcePath("deploy/agreements/cld-return.yaml"));
  const std::string yaml((std::istreambuf_iterator<char>(shipped)), std::istreambuf_iterator<char>());
  const std::string exempt = "national_opt_out: exempt\n    exemption: required-by-law";
  EXPECT_NE(yaml.find(exempt), std::string::npos) << "the shipped CLD agreement changed";
  std::ofstream(out + "/cld-return.yaml")
      << absl::StrReplaceAll(yaml, {{exempt, "national_opt_out: applies\n    opt_out_basis: s251 support (synthetic)"}});
  return out;
}

}  // namespace carebroker::testing
