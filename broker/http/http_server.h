// A small HTTP/1.1 server on Boost.Beast over Asio, for the broker's own
// listeners: the metrics and health listener (plain HTTP on loopback, so a
// scraper needs no client certificate) and the MESH front door (HTTPS with
// mutual TLS).
//
//   auto s = HttpServer::Start("127.0.0.1:9464", [](const HttpRequest& r) {
//     return HttpResponse{200, "text/plain", "ok\n"};
//   });
//   (*s)->port();
//
// One I/O thread runs every connection. A synchronous handler runs on it and
// must be quick (the metrics handler reads atomics and asks the store for a
// few counts); an asynchronous one is handed the request and a Reply to call
// once, from any thread, when its answer is ready (a MESH send answers after
// its commit). Keep-alive is honoured; a connection idle for 30 s, a TLS
// handshake that takes longer, a request head over 16 KiB or a body over
// the server's limit is closed or refused (413).
//
// With TLS, the client must present a certificate, and `check_client`
// decides it during the handshake (the broker passes its CertificateGate:
// the CA bundle, the CRL and the audit of refusals the gRPC listener uses),
// so a refused certificate never reaches a handler. The server's own
// certificate and key can be replaced while it runs (SetIdentity): each new
// handshake uses the identity in force when it starts.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace carebroker::http {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method;  // "GET", "HEAD", ...
  std::string target;  // path and query, as sent
  Headers headers;     // in order; names lower-cased
  std::string body;
  // TLS listeners: the client's certificate (PEM), as check_client passed it.
  std::string peer_certificate_pem;

  // The first value of header `name` (lower case), or "" when absent.
  absl::string_view Header(absl::string_view name) const;
};

// Takes one piece of a streamed body: the next bytes, "" at the end, or an
// error (the connection is then closed, the body cut short). Call it once
// per ask, from any thread.
using PieceSink = std::function<void(absl::StatusOr<std::string>)>;

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  Headers headers;  // beside Server, Content-Type and Content-Length
  // When set, the body is sent as it comes (Transfer-Encoding: chunked)
  // instead of `body`: asked on the I/O thread for each next piece once
  // the one before is written, so one piece is in memory at a time (a MESH
  // chunk of 100 MB is never held whole).
  std::function<void(PieceSink)> pieces;
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;
// Call exactly once, from any thread, and before the server is destroyed
// (whoever answers later, such as a store callback, must be stopped first).
using Reply = std::function<void(HttpResponse)>;
using AsyncHttpHandler = std::function<void(HttpRequest, Reply)>;

struct TlsOptions {
  // The server's certificate chain and key (PEM) at start; SetIdentity
  // replaces them.
  std::string cert_chain_pem;
  std::string key_pem;
  // Decides the client's certificate chain (PEM, its certificate first):
  // non-OK refuses the handshake. Runs on the I/O thread.
  std::function<absl::Status(const std::string& chain_pem)> check_client;
};

struct ServerOptions {
  uint64_t body_limit = 64 * 1024;
  std::optional<TlsOptions> tls;
};

class HttpServer {
 public:
  // Binds `listen` ("host:port"; port 0 picks one) and starts serving.
  // UNAVAILABLE when the address cannot be bound; INVALID_ARGUMENT when it
  // is not host:port, or the TLS certificate or key cannot be used.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& listen, HttpHandler handler);
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& listen, AsyncHttpHandler handler,
                                                           ServerOptions options);
  ~HttpServer();  // stops accepting, closes connections, joins the thread
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const;

  // TLS listeners: later handshakes present this certificate chain and key.
  // INVALID_ARGUMENT (and the identity in force stays) when they cannot be
  // used together.
  absl::Status SetIdentity(const std::string& cert_chain_pem, const std::string& key_pem);

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace carebroker::http
