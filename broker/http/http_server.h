// A small HTTP/1.1 server on Boost.Beast over Asio, for the broker's own
// listeners: today the metrics and health listener (plain HTTP on loopback,
// so a scraper needs no client certificate).
//
//   auto s = HttpServer::Start("127.0.0.1:9464", [](const HttpRequest& r) {
//     return HttpResponse{200, "text/plain", "ok\n"};
//   });
//   (*s)->port();
//
// One I/O thread runs every connection; handlers run on it and must be
// quick (the metrics handler reads atomics and asks the store for a few
// counts). Keep-alive is honoured; a connection idle for 30 s, a request
// head over 16 KiB or a body over 64 KiB is closed or refused (413).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace carebroker::http {

struct HttpRequest {
  std::string method;  // "GET", "HEAD", ...
  std::string target;  // path and query, as sent
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

class HttpServer {
 public:
  // Binds `listen` ("host:port"; port 0 picks one) and starts serving.
  // UNAVAILABLE when the address cannot be bound; INVALID_ARGUMENT when it
  // is not host:port.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& listen, HttpHandler handler);
  ~HttpServer();  // stops accepting, closes connections, joins the thread
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const;

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace carebroker::http
