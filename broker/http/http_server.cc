#include "broker/http/http_server.h"

#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <thread>
#include <type_traits>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/reasons.h"
#include "core/status.h"

namespace carebroker::http {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using asio::ip::tcp;

absl::string_view HttpRequest::Header(absl::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return v;
  }
  return {};
}

namespace {

constexpr auto kIdle = std::chrono::seconds(30);
constexpr uint32_t kHeadLimit = 16 * 1024;

// The headers of `r` on a response made with its status, whatever the body.
template <class Body>
void Head(const HttpResponse& r, bool keep_alive, bhttp::response<Body>& res) {
  res.set(bhttp::field::server, "carebroker");
  res.set(bhttp::field::content_type, r.content_type);
  for (const auto& [name, value] : r.headers) res.insert(name, value);
  res.keep_alive(keep_alive);
}

// Takes the body out of `r` (a download may be a 100 MB chunk: never copied).
bhttp::response<bhttp::string_body> Render(HttpResponse&& r, unsigned version, bool keep_alive, bool head) {
  bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(r.status), version};
  Head(r, keep_alive, res);
  res.body() = std::move(r.body);
  res.prepare_payload();
  if (head) res.body().clear();  // HEAD: the GET's headers, no body
  return res;
}

std::string Pem(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  std::string out;
  if (bio != nullptr && PEM_write_bio_X509(bio, cert) == 1) {
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    out.assign(data, static_cast<size_t>(n));
  }
  BIO_free(bio);
  return out;
}

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

}  // namespace

struct HttpServer::Impl {
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  AsyncHttpHandler handler;
  uint64_t body_limit = 64 * 1024;
  bool tls = false;
  std::function<absl::Status(const std::string&)> check_client;
  absl::Mutex mu;
  std::shared_ptr<ssl::context> context ABSL_GUARDED_BY(mu);
  std::thread thread;

  std::shared_ptr<ssl::context> Context() ABSL_LOCKS_EXCLUDED(mu) {
    absl::MutexLock l(&mu);
    return context;
  }
  absl::StatusOr<std::shared_ptr<ssl::context>> MakeContext(const std::string& cert, const std::string& key);
  void Accept();
};

namespace {

// The whole verification of a client's chain, in place of OpenSSL's: the
// chain goes to check_client (the broker's CertificateGate) as PEM.
int VerifyClient(X509_STORE_CTX* store, void* arg) {
  auto* impl = static_cast<HttpServer::Impl*>(arg);
  X509* leaf = X509_STORE_CTX_get0_cert(store);
  if (leaf == nullptr) return 0;
  std::string chain = Pem(leaf);
  STACK_OF(X509)* rest = X509_STORE_CTX_get0_untrusted(store);
  for (int i = 0; rest != nullptr && i < sk_X509_num(rest); ++i) {
    X509* c = sk_X509_value(rest, i);
    if (X509_cmp(c, leaf) != 0) chain += Pem(c);
  }
  if (!impl->check_client || !impl->check_client(chain).ok()) {
    X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
  }
  return 1;
}

// One connection: (the TLS handshake, then) read a request, answer it,
// again while keep-alive holds.
template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

 public:
  // `ctx`: TLS only, the identity in force when the connection came; held
  // for the connection's life (a later SetIdentity does not touch it).
  Session(tcp::socket socket, std::shared_ptr<ssl::context> ctx, HttpServer::Impl& impl)
      : ctx_(std::move(ctx)), stream_(MakeStream(std::move(socket))), impl_(impl) {}

  void Start() {
    if constexpr (kTls) {
      beast::get_lowest_layer(stream_).expires_after(kIdle);
      stream_.async_handshake(ssl::stream_base::server, [self = this->shared_from_this()](beast::error_code ec) {
        if (ec) return self->CloseNow();  // refused or broken: nothing to answer
        if (X509* peer = SSL_get0_peer_certificate(self->stream_.native_handle())) self->peer_ = Pem(peer);
        self->Read();
      });
    } else {
      Read();
    }
  }

 private:
  void Read() {
    parser_.emplace();
    parser_->header_limit(kHeadLimit);
    parser_->body_limit(impl_.body_limit);
    beast::get_lowest_layer(stream_).expires_after(kIdle);
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self = this->shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec == bhttp::error::body_limit || ec == bhttp::error::header_limit) {
      return Write(Render({413, "text/plain; charset=utf-8", "request too large\n", {}}, 11, false, false));
    }
    if (ec) return Close();  // closed, timed out or not HTTP: nothing to answer
    auto& req = parser_->get();
    HttpRequest in;
    in.method = std::string(req.method_string());
    in.target = std::string(req.target());
    for (const auto& field : req) {
      in.headers.emplace_back(absl::AsciiStrToLower(absl::string_view(field.name_string().data(), field.name_string().size())),
                              std::string(field.value()));
    }
    in.body = std::move(req.body());
    in.peer_certificate_pem = peer_;
    const unsigned version = req.version();
    const bool keep_alive = req.keep_alive();
    const bool head = req.method() == bhttp::verb::head;
    auto self = this->shared_from_this();
    Reply reply = [self, version, keep_alive, head](HttpResponse out) {
      asio::post(self->stream_.get_executor(), [self, out = std::move(out), version, keep_alive, head]() mutable {
        if (out.pieces && !head) return self->WriteStreamed(std::move(out), version, keep_alive);
        self->Write(Render(std::move(out), version, keep_alive, head));
      });
    };
    try {
      impl_.handler(std::move(in), std::move(reply));
    } catch (const std::exception&) {
      Write(Render({500, "text/plain; charset=utf-8", "internal error\n", {}}, version, false, head));
    }
  }

  // A body sent as its pieces come (HttpResponse::pieces), chunked.
  void WriteStreamed(HttpResponse&& r, unsigned version, bool keep_alive) {
    streamed_.emplace(static_cast<bhttp::status>(r.status), version);
    // HTTP/1.0 has no chunked encoding: the body ends with the connection.
    Head(r, keep_alive && version >= 11, *streamed_);
    streamed_->chunked(version >= 11);
    streamed_->body().data = nullptr;
    streamed_->body().more = true;
    source_ = std::move(r.pieces);
    serializer_.emplace(*streamed_);
    beast::get_lowest_layer(stream_).expires_after(kIdle);
    bhttp::async_write_header(stream_, *serializer_, [self = this->shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->EndStreamed(false);
      self->AskPiece();
    });
  }

  void AskPiece() {
    source_([self = this->shared_from_this()](absl::StatusOr<std::string> piece) {
      asio::post(self->stream_.get_executor(),
                 [self, piece = std::move(piece)]() mutable { self->WritePiece(std::move(piece)); });
    });
  }

  void WritePiece(absl::StatusOr<std::string> piece) {
    if (!piece.ok()) return EndStreamed(false);  // cut short: the client sees an unfinished body
    piece_ = *std::move(piece);
    auto& body = streamed_->body();
    body.data = piece_.empty() ? nullptr : piece_.data();
    body.size = piece_.size();
    body.more = !piece_.empty();
    beast::get_lowest_layer(stream_).expires_after(kIdle);
    bhttp::async_write(stream_, *serializer_, [self = this->shared_from_this()](beast::error_code ec, size_t) {
      if (ec == bhttp::error::need_buffer) ec = {};  // this piece is written; the next is wanted
      if (ec) return self->EndStreamed(false);
      if (!self->serializer_->is_done()) return self->AskPiece();
      self->EndStreamed(self->streamed_->keep_alive());
    });
  }

  void EndStreamed(bool keep_alive) {
    serializer_.reset();
    streamed_.reset();
    source_ = nullptr;
    piece_ = {};
    if (!keep_alive) return Close();
    Read();
  }

  void Write(bhttp::response<bhttp::string_body> res) {
    res_ = std::move(res);
    beast::get_lowest_layer(stream_).expires_after(kIdle);
    bhttp::async_write(stream_, res_, [self = this->shared_from_this()](beast::error_code ec, size_t) {
      const bool keep_alive = self->res_.keep_alive();
      self->res_ = {};  // a sent body (a MESH chunk may be 100 MB) is freed now, not at the next answer
      if (ec || !keep_alive) return self->Close();
      self->Read();
    });
  }

  void Close() {
    if constexpr (kTls) {
      beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(5));
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) { self->CloseNow(); });
    } else {
      CloseNow();
    }
  }

  void CloseNow() {
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(stream_).socket().close(ignored);
  }

  Stream MakeStream(tcp::socket socket) {
    if constexpr (kTls) {
      return Stream(std::move(socket), *ctx_);
    } else {
      return Stream(std::move(socket));
    }
  }

  std::shared_ptr<ssl::context> ctx_;
  Stream stream_;
  HttpServer::Impl& impl_;
  std::string peer_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  bhttp::response<bhttp::string_body> res_;
  // A streamed answer in progress (WriteStreamed).
  std::optional<bhttp::response<bhttp::buffer_body>> streamed_;
  std::optional<bhttp::response_serializer<bhttp::buffer_body>> serializer_;
  std::function<void(PieceSink)> source_;
  std::string piece_;  // the piece being written
};

}  // namespace

absl::StatusOr<std::shared_ptr<ssl::context>> HttpServer::Impl::MakeContext(const std::string& cert,
                                                                            const std::string& key) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  beast::error_code ec;
  ctx->use_certificate_chain(asio::buffer(cert), ec);
  if (ec) return InvalidArgument(reason::kConfigInvalid, "tls.cert: not a PEM certificate chain");
  ctx->use_private_key(asio::buffer(key), ssl::context::pem, ec);
  if (ec || SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
    return InvalidArgument(reason::kConfigInvalid, "tls.key: not the private key of tls.cert");
  }
  SSL_CTX_set_verify(ctx->native_handle(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  SSL_CTX_set_cert_verify_callback(ctx->native_handle(), &VerifyClient, this);
  // No session resumption: every connection presents its certificate and
  // the gate decides it then (a revocation takes effect at the next
  // connection), and a resumed session would reach a handler with no
  // certificate to name the caller.
  SSL_CTX_set_session_cache_mode(ctx->native_handle(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx->native_handle(), SSL_OP_NO_TICKET);
  SSL_CTX_set_num_tickets(ctx->native_handle(), 0);
  return ctx;
}

void HttpServer::Impl::Accept() {
  acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
    // A connection that failed while being accepted is dropped.
    if (!ec) {
      if (tls) {
        std::make_shared<Session<TlsStream>>(std::move(socket), Context(), *this)->Start();
      } else {
        std::make_shared<Session<beast::tcp_stream>>(std::move(socket), nullptr, *this)->Start();
      }
    }
    Accept();
  });
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& listen, HttpHandler handler) {
  return Start(
      listen, [handler = std::move(handler)](HttpRequest r, Reply reply) { reply(handler(r)); }, ServerOptions{});
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& listen, AsyncHttpHandler handler,
                                                             ServerOptions options) {
  const auto colon = listen.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || colon == 0 || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port > 65535) {
    return InvalidArgument(reason::kConfigInvalid, absl::StrCat("expected host:port, not ", listen));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host == "localhost") host = "127.0.0.1";
  auto impl = std::make_unique<Impl>();
  impl->handler = std::move(handler);
  impl->body_limit = options.body_limit;
  if (options.tls) {
    impl->tls = true;
    impl->check_client = std::move(options.tls->check_client);
    auto ctx = impl->MakeContext(options.tls->cert_chain_pem, options.tls->key_pem);
    if (!ctx.ok()) return ctx.status();
    absl::MutexLock l(&impl->mu);
    impl->context = *std::move(ctx);
  }
  beast::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) return InvalidArgument(reason::kConfigInvalid, absl::StrCat("not an IP address: ", host));
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Error(absl::StatusCode::kUnavailable, reason::kListenFailed,
                 absl::StrCat("cannot listen on ", listen, ": ", ec.message()));
  }
  Impl* raw = impl.get();
  raw->Accept();
  raw->thread = std::thread([raw] { raw->io.run(); });
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

absl::Status HttpServer::SetIdentity(const std::string& cert_chain_pem, const std::string& key_pem) {
  if (!impl_->tls) return InvalidArgument(reason::kConfigInvalid, "this listener does not use TLS");
  auto ctx = impl_->MakeContext(cert_chain_pem, key_pem);
  if (!ctx.ok()) return ctx.status();
  absl::MutexLock l(&impl_->mu);
  impl_->context = *std::move(ctx);
  return absl::OkStatus();
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  asio::post(impl_->io, [impl = impl_.get()] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
    impl->io.stop();
  });
  impl_->thread.join();
}

int HttpServer::port() const { return impl_->acceptor.local_endpoint().port(); }

}  // namespace carebroker::http
