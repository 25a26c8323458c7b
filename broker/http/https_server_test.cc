// The HTTPS listener with mutual TLS, for real: libcurl over loopback with
// the dev PKI's certificates, the client's chain decided by the broker's
// CertificateGate (CA bundle and CRL) during the handshake.
#include <curl/curl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "broker/http/http_server.h"
#include "broker/server/certificate_gate.h"
#include "core/files.h"
#include "tests/testutil/testutil.h"

namespace carebroker::http {
namespace {

using ::testing::HasSubstr;

std::string Pki(const std::string& file) {
  auto pem = ReadFileToString(testing::PkiDir() + "/" + file, "test file");
  EXPECT_TRUE(pem.ok()) << pem.status();
  return pem.ok() ? *pem : "";
}

struct Answer {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string body;
  std::string server_subject;  // of the certificate the server presented
};

// One request with a fresh connection. `who`: a dev PKI name ("" for no
// client certificate).
Answer Call(int port, const std::string& who, const std::string& path = "/", const std::string& body = "") {
  Answer out;
  CURL* curl = curl_easy_init();
  const std::string url = absl::StrCat("https://localhost:", port, path);
  const std::string ca = testing::PkiDir() + "/ca.crt";
  const std::string cert = testing::PkiDir() + "/" + who + ".crt";
  const std::string key = testing::PkiDir() + "/" + who + ".key";
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CAINFO, ca.c_str());
  if (!who.empty()) {
    curl_easy_setopt(curl, CURLOPT_SSLCERT, cert.c_str());
    curl_easy_setopt(curl, CURLOPT_SSLKEY, key.c_str());
  }
  struct curl_slist* headers = curl_slist_append(nullptr, "Mex-Test-Header: Value One");
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  if (!body.empty()) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  curl_easy_setopt(curl, CURLOPT_CERTINFO, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &out.body);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, +[](char* p, size_t size, size_t n, void* into) {
    static_cast<std::string*>(into)->append(p, size * n);
    return size * n;
  });
  out.code = curl_easy_perform(curl);
  if (out.code == CURLE_OK) {
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &out.status);
    struct curl_certinfo* info = nullptr;
    curl_easy_getinfo(curl, CURLINFO_CERTINFO, &info);
    for (int i = 0; info != nullptr && i < info->num_of_certs && out.server_subject.empty(); ++i) {
      for (auto* f = info->certinfo[i]; f != nullptr; f = f->next) {
        if (std::string(f->data).rfind("Subject:", 0) == 0) out.server_subject = f->data;
      }
    }
  }
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return out;
}

class HttpsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto gate = CertificateGate::Create(Pki("ca.crt"), Pki("crl.pem"), absl::Now());
    ASSERT_TRUE(gate.ok()) << gate.status();
    gate_ = *gate;
    gate_->SetRefusalSink([this](const CertificateGate::Refusal& r) {
      absl::MutexLock l(&mu_);
      refusals_.push_back(r.reason);
    });
    ServerOptions options;
    options.body_limit = 1024;
    options.tls = TlsOptions{Pki("server.crt"), Pki("server.key"),
                             [gate = gate_](const std::string& chain) { return gate->Decide(chain); }};
    auto server = HttpServer::Start(
        "127.0.0.1:0",
        [this](HttpRequest r, Reply reply) {
          calls_++;
          std::string seen = absl::StrCat(r.method, " ", r.target, " header=", r.Header("mex-test-header"),
                                          " peer=", r.peer_certificate_pem.empty() ? "none" : "pem",
                                          " body=", r.body);
          if (r.target == "/later") {
            // Answered from another thread, after the handler returned.
            std::thread([reply = std::move(reply), seen] {
              absl::SleepFor(absl::Milliseconds(50));
              reply(HttpResponse{202, "text/plain", "later " + seen, {{"mex-messageid", "M1"}}});
            }).detach();
            return;
          }
          if (r.target == "/pieces" || r.target == "/cut") {
            // Three pieces, each given from another thread once asked for;
            // /cut fails at the third.
            HttpResponse out{200, "application/octet-stream", "", {{"mex-chunk-range", "1:2"}}};
            auto n = std::make_shared<int>(0);
            const bool cut = r.target == "/cut";
            out.pieces = [n, cut](PieceSink sink) {
              const int i = (*n)++;
              std::thread([i, cut, sink = std::move(sink)] {
                if (i == 2 && cut) return sink(absl::UnavailableError("store gone"));
                sink(i < 3 ? std::string(1 << 20, static_cast<char>('a' + i)) : std::string());
              }).detach();
            };
            return reply(std::move(out));
          }
          reply(HttpResponse{200, "text/plain", seen, {}});
        },
        std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  std::vector<std::string> Refusals() {
    absl::MutexLock l(&mu_);
    return refusals_;
  }

  std::shared_ptr<CertificateGate> gate_;
  std::unique_ptr<HttpServer> server_;
  std::atomic<int> calls_{0};
  absl::Mutex mu_;
  std::vector<std::string> refusals_ ABSL_GUARDED_BY(mu_);
};

TEST_F(HttpsServerTest, AClientWithATrustedCertificateIsServedWithItsHeadersAndCertificate) {
  Answer a = Call(server_->port(), "RR8", "/messageexchange/RR8HC001", "hello");
  ASSERT_EQ(a.code, CURLE_OK) << curl_easy_strerror(a.code);
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(a.body, "POST /messageexchange/RR8HC001 header=Value One peer=pem body=hello");
  EXPECT_THAT(a.server_subject, HasSubstr("CN = localhost"));
  EXPECT_TRUE(Refusals().empty());
}

TEST_F(HttpsServerTest, AnAsynchronousReplyFromAnotherThreadIsWrittenWithItsHeaders) {
  Answer a = Call(server_->port(), "503", "/later");
  ASSERT_EQ(a.code, CURLE_OK) << curl_easy_strerror(a.code);
  EXPECT_EQ(a.status, 202);
  EXPECT_THAT(a.body, HasSubstr("later GET /later"));
}

TEST_F(HttpsServerTest, AStreamedBodyArrivesWholeAndAFailedPieceCutsItShort) {
  Answer a = Call(server_->port(), "503", "/pieces");
  ASSERT_EQ(a.code, CURLE_OK) << curl_easy_strerror(a.code);
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(a.body, std::string(1 << 20, 'a') + std::string(1 << 20, 'b') + std::string(1 << 20, 'c'));
  // A source failing mid-body closes the connection: the client sees an
  // unfinished chunked body, never a short one passed off as whole.
  Answer cut = Call(server_->port(), "503", "/cut");
  EXPECT_NE(cut.code, CURLE_OK);
  EXPECT_LT(cut.body.size(), size_t{3} << 20);
  // The server goes on serving.
  EXPECT_EQ(Call(server_->port(), "503", "/pieces").code, CURLE_OK);
}

TEST_F(HttpsServerTest, NoCertificateAnotherCaOrARevokedOneIsRefusedAtTheHandshake) {
  Answer none = Call(server_->port(), "");
  EXPECT_NE(none.code, CURLE_OK) << "served without a client certificate";
  Answer rogue = Call(server_->port(), "rogue");
  EXPECT_NE(rogue.code, CURLE_OK) << "served a certificate of another CA";
  Answer revoked = Call(server_->port(), "revoked");
  EXPECT_NE(revoked.code, CURLE_OK) << "served a revoked certificate";
  EXPECT_EQ(calls_.load(), 0) << "a refused client reached the handler";
  EXPECT_THAT(Refusals(), ::testing::ElementsAre("CERTIFICATE_UNTRUSTED", "CERTIFICATE_REVOKED"));
  // The listener still serves a good client afterwards.
  EXPECT_EQ(Call(server_->port(), "RR8").status, 200);
}

TEST_F(HttpsServerTest, ABodyOverTheLimitIs413) {
  Answer a = Call(server_->port(), "RR8", "/", std::string(2048, 'x'));
  ASSERT_EQ(a.code, CURLE_OK) << curl_easy_strerror(a.code);
  EXPECT_EQ(a.status, 413);
  EXPECT_EQ(calls_.load(), 0);
}

TEST_F(HttpsServerTest, ANewIdentityServesLaterHandshakesAndABadOneIsRefused) {
  EXPECT_FALSE(server_->SetIdentity(Pki("server-next.crt"), Pki("server.key")).ok())
      << "a key that is not the certificate's was put in force";
  EXPECT_FALSE(server_->SetIdentity("not a certificate", Pki("server.key")).ok());
  EXPECT_THAT(Call(server_->port(), "RR8").server_subject, HasSubstr("CN = localhost,"));

  ASSERT_TRUE(server_->SetIdentity(Pki("server-next.crt"), Pki("server-next.key")).ok());
  Answer a = Call(server_->port(), "RR8");
  ASSERT_EQ(a.code, CURLE_OK) << curl_easy_strerror(a.code);
  EXPECT_THAT(a.server_subject, HasSubstr("localhost (next)"));
}

TEST(HttpServerPlain, SetIdentityOnAPlainListenerIsAnError) {
  auto server = HttpServer::Start("127.0.0.1:0", [](const HttpRequest&) { return HttpResponse{}; });
  ASSERT_TRUE(server.ok());
  EXPECT_FALSE((*server)->SetIdentity("a", "b").ok());
}

}  // namespace
}  // namespace carebroker::http
