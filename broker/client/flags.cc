#include "broker/client/flags.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace carebroker {

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

void AddTlsFlags(CLI::App& app, ClientTls& tls, absl::string_view certificate, const std::string& default_target) {
  tls.target = EnvOr("CAREBROKER_TARGET", default_target);
  tls.cert = EnvOr("CAREBROKER_CERT");
  tls.key = EnvOr("CAREBROKER_KEY");
  tls.ca = EnvOr("CAREBROKER_CA");
  app.add_option("--target", tls.target, "broker host:port (CAREBROKER_TARGET)");
  app.add_option("--cert", tls.cert, absl::StrCat(certificate, " certificate PEM (CAREBROKER_CERT)"));
  app.add_option("--key", tls.key, "its private key PEM (CAREBROKER_KEY)");
  app.add_option("--ca", tls.ca, "CA certificate PEM (CAREBROKER_CA)");
}

void AddTimeoutFlag(CLI::App& app, double& seconds, absl::string_view what) {
  app.add_option("--timeout", seconds, std::string(what))->check(CLI::PositiveNumber);
}

absl::Status RequireTls(const ClientTls& tls) {
  if (!tls.cert.empty() && !tls.key.empty() && !tls.ca.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError("--cert, --key and --ca (or CAREBROKER_CERT, _KEY, _CA) are required");
}

}  // namespace carebroker
