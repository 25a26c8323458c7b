#include "connect/webhook.h"

#include <curl/curl.h>

#include <algorithm>
#include <ctime>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/time.h"
#include "core/files.h"

namespace carebroker {
namespace {

constexpr absl::Duration kMaxRetryAfter = absl::Minutes(10);

CURL* Handle(void* p) { return static_cast<CURL*>(p); }

// A header value from the broker or the config, with no way to end the line.
std::string HeaderValue(absl::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (static_cast<unsigned char>(c) >= 0x20 && c != 0x7f) out.push_back(c);
  }
  return out;
}

size_t Discard(char*, size_t size, size_t n, void*) { return size * n; }

int AbortWhenStopping(void* stopping, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return stopping != nullptr && static_cast<const std::atomic<bool>*>(stopping)->load() ? 1 : 0;
}

absl::Duration RetryAfter(CURL* curl) {
  struct curl_header* h = nullptr;
  if (curl_easy_header(curl, "Retry-After", 0, CURLH_HEADER, -1, &h) != CURLHE_OK || h == nullptr) {
    return absl::ZeroDuration();
  }
  const absl::string_view v = absl::StripAsciiWhitespace(h->value);
  absl::Duration d = absl::ZeroDuration();
  if (int64_t seconds = 0; absl::SimpleAtoi(v, &seconds)) {
    d = absl::Seconds(seconds);
  } else if (const time_t at = curl_getdate(std::string(v).c_str(), nullptr); at != -1) {
    d = absl::FromTimeT(at) - absl::Now();
  }
  return std::clamp(d, absl::ZeroDuration(), kMaxRetryAfter);
}

}  // namespace

absl::Status CheckWebhookUrl(const std::string& url) {
  CURLU* u = curl_url();
  char *scheme = nullptr, *host = nullptr, *user = nullptr;
  absl::Status status;
  if (curl_url_set(u, CURLUPART_URL, url.c_str(), 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
    status = absl::InvalidArgumentError("not a URL: expected https://host[:port]/path");
  } else if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK) {
    status = absl::InvalidArgumentError("no credentials in the URL: use authorization_file");
  } else if (absl::string_view(scheme) == "http") {
    const absl::string_view h = host;
    if (h != "127.0.0.1" && h != "[::1]" && h != "localhost") {
      status = absl::InvalidArgumentError("http:// only to a loopback host; use https");
    }
  } else if (absl::string_view(scheme) != "https") {
    status = absl::InvalidArgumentError("the scheme must be https");
  }
  curl_free(scheme);
  curl_free(host);
  curl_free(user);
  curl_url_cleanup(u);
  return status;
}

absl::StatusOr<std::unique_ptr<Webhook>> Webhook::Create(const v1::Webhook& config,
                                                         const std::atomic<bool>* stopping) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (absl::Status s = CheckWebhookUrl(config.url()); !s.ok()) return s;

  std::unique_ptr<Webhook> w(new Webhook);
  w->stopping_ = stopping;
  if (!config.authorization_file().empty()) {
    auto a = ReadFileToString(config.authorization_file(), "webhook authorization file");
    if (!a.ok()) return a.status();
    const absl::string_view value = absl::StripAsciiWhitespace(*a);
    if (value.empty() || HeaderValue(value) != value) {
      return absl::InvalidArgumentError("webhook authorization file: expected one line, e.g. Bearer <token>");
    }
    w->authorization_ = absl::StrCat("Authorization: ", value);
  }
  CURL* c = curl_easy_init();
  if (c == nullptr) return absl::InternalError("libcurl could not start");
  w->curl_ = c;
  const int64_t timeout_ms = absl::ToInt64Milliseconds(DurationOr(config.timeout(), absl::Seconds(30)));
  curl_easy_setopt(c, CURLOPT_URL, config.url().c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_ms));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(std::min<int64_t>(timeout_ms, 10000)));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Discard);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, AbortWhenStopping);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, const_cast<std::atomic<bool>*>(stopping));
  if (!config.ca().empty()) curl_easy_setopt(c, CURLOPT_CAINFO, config.ca().c_str());
  if (!config.cert().empty()) {
    curl_easy_setopt(c, CURLOPT_SSLCERT, config.cert().c_str());
    curl_easy_setopt(c, CURLOPT_SSLKEY, config.key().c_str());
  }
  return w;
}

Webhook::~Webhook() { curl_easy_cleanup(Handle(curl_)); }

DeliveryAnswer Webhook::Post(const v1::Delivery& d) {
  CURL* c = Handle(curl_);
  struct curl_slist* headers = nullptr;
  for (const std::string& h :
       {absl::StrCat("Content-Type: ", HeaderValue(d.content_type())),
        absl::StrCat("Idempotency-Key: ", HeaderValue(d.message_id())),
        absl::StrCat("X-Carebroker-Message-Id: ", HeaderValue(d.message_id())),
        absl::StrCat("X-Carebroker-Sender: ", HeaderValue(d.sender())),
        absl::StrCat("X-Carebroker-Workflow: ", HeaderValue(d.workflow())),
        absl::StrCat("X-Carebroker-Delivery-Count: ", d.delivery_count()), std::string("Expect:"), authorization_}) {
    if (!h.empty()) headers = curl_slist_append(headers, h.c_str());
  }
  char error[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, d.payload().data());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(d.payload().size()));
  const CURLcode rc = curl_easy_perform(c);
  DeliveryAnswer answer;
  if (rc != CURLE_OK) {
    answer.reason = absl::StrCat("webhook: ", error[0] != 0 ? error : curl_easy_strerror(rc));
  } else {
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    answer.delivered = code >= 200 && code < 300;
    if (!answer.delivered) {
      answer.code = absl::StrCat("HTTP_", code);
      answer.reason = absl::StrCat("the webhook answered HTTP ", code);
      if (code == 429 || code == 503) answer.retry_after = RetryAfter(c);
    }
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, nullptr);
  curl_slist_free_all(headers);
  return answer;
}

}  // namespace carebroker
