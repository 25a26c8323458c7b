#include "broker/server/certificate_gate.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "core/files.h"
#include "core/status.h"

namespace carebroker {
namespace {

std::string Pki(const std::string& file) {
  const char* dir = std::getenv("CB_TEST_PKI");
  auto pem = ReadFileToString(std::string(dir ? dir : "/nonexistent") + "/" + file, "test file");
  EXPECT_TRUE(pem.ok()) << pem.status();
  return pem.ok() ? *pem : "";
}

std::shared_ptr<CertificateGate> Gate(bool with_crl) {
  auto gate = CertificateGate::Create(Pki("ca.crt"), with_crl ? Pki("crl.pem") : "", absl::Now());
  EXPECT_TRUE(gate.ok()) << gate.status();
  return gate.ok() ? *gate : nullptr;
}

TEST(CertificateGate, AcceptsCertificatesFromTheCa) {
  auto gate = Gate(true);
  for (const char* cert : {"RR8.crt", "503.crt", "ig-officer.crt", "operator.crt"}) {
    EXPECT_TRUE(gate->Check(Pki(cert)).ok()) << cert << ": " << gate->Check(Pki(cert));
  }
}

TEST(CertificateGate, KnowsWhenAFreshCrlIsDue) {
  // The dev PKI's CRL is valid for 3650 days from when it was made.
  auto next = Gate(true)->crl_next_update();
  ASSERT_TRUE(next.has_value());
  EXPECT_GT(*next, absl::Now() + absl::Hours(24 * 3000));
  EXPECT_LT(*next, absl::Now() + absl::Hours(24 * 3651));
  EXPECT_FALSE(Gate(false)->crl_next_update().has_value()) << "no CRL, no due date";
}

TEST(CertificateGate, NamesEveryRefusal) {
  auto gate = Gate(true);
  struct Case {
    const char* cert;
    const char* reason;
  };
  for (const Case& c : {Case{"rogue.crt", "CERTIFICATE_UNTRUSTED"}, Case{"expired.crt", "CERTIFICATE_EXPIRED"},
                        Case{"future.crt", "CERTIFICATE_NOT_YET_VALID"}, Case{"revoked.crt", "CERTIFICATE_REVOKED"},
                        Case{"ca.crt", "CERTIFICATE_INVALID"}}) {
    CertificateGate::Refusal r;
    absl::Status s = gate->Check(Pki(c.cert), &r);
    EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << c.cert;
    EXPECT_EQ(ReasonOf(s), c.reason) << c.cert << ": " << s;
    EXPECT_EQ(r.reason, c.reason) << c.cert;
    EXPECT_FALSE(r.detail.empty()) << c.cert;
  }
  CertificateGate::Refusal r;
  EXPECT_FALSE(gate->Check(Pki("revoked.crt"), &r).ok());
  EXPECT_FALSE(r.claimed_org.empty()) << "the claimed organisation is reported";
  EXPECT_EQ(ReasonOf(gate->Check("not a certificate", &r)), "CERTIFICATE_INVALID");
  // Without the CRL, the revoked certificate is otherwise valid.
  EXPECT_TRUE(Gate(false)->Check(Pki("revoked.crt")).ok());
}

TEST(CertificateGate, RefusesBadCaAndCrlFiles) {
  EXPECT_EQ(ReasonOf(CertificateGate::Create("", "", absl::Now()).status()), "CONFIG_INVALID");
  auto s = CertificateGate::Create(Pki("ca.crt"), "garbage", absl::Now()).status();
  EXPECT_NE(s.message().find("tls.crl: not a PEM"), std::string::npos) << s;
  // A CRL signed by another CA.
  s = CertificateGate::Create(Pki("rogue-ca.crt"), Pki("crl.pem"), absl::Now()).status();
  EXPECT_NE(s.message().find("not signed by a CA in tls.ca"), std::string::npos) << s;
  // A CRL past its next-update time.
  s = CertificateGate::Create(Pki("ca.crt"), Pki("crl.pem"), absl::Now() + absl::Hours(24 * 3650)).status();
  EXPECT_NE(s.message().find("next-update"), std::string::npos) << s;
}

}  // namespace
}  // namespace carebroker
