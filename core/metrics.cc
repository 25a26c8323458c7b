#include "core/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"

namespace carebroker::metrics {
namespace {

// A misuse of the registry is a programming error, found at start.
void Require(bool ok, absl::string_view what, absl::string_view name) {
  if (ok) return;
  fprintf(stderr, "metrics: %.*s: %.*s\n", static_cast<int>(what.size()), what.data(), static_cast<int>(name.size()),
          name.data());
  std::abort();
}

void AddDouble(std::atomic<double>& a, double d) {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + d, std::memory_order_relaxed)) {
  }
}

bool ValidName(absl::string_view n) {
  if (n.empty()) return false;
  for (size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return absl::StrFormat("%.0f", v);
  return absl::StrFormat("%.9g", v);
}

// {a="x",b="y"} (with `extra` appended as one more pair), or "" for none.
std::string Labels(const std::vector<std::string>& names, const std::vector<std::string>& values,
                   absl::string_view extra_name = "", absl::string_view extra_value = "") {
  if (names.empty() && extra_name.empty()) return "";
  std::string out = "{";
  auto pair = [&out](absl::string_view n, absl::string_view v) {
    if (out.size() > 1) out += ',';
    absl::StrAppend(&out, n, "=\"");
    for (char c : v) {
      if (c == '\\') {
        out += "\\\\";
      } else if (c == '"') {
        out += "\\\"";
      } else if (c == '\n') {
        out += "\\n";
      } else {
        out += c;
      }
    }
    out += '"';
  };
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) pair(names[i], values[i]);
  if (!extra_name.empty()) pair(extra_name, extra_value);
  out += '}';
  return out;
}

absl::string_view TypeName(Type t) {
  switch (t) {
    case Type::kCounter:
      return "counter";
    case Type::kGauge:
      return "gauge";
    case Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

void WriteHistogram(std::string* out, absl::string_view name, const std::vector<std::string>& names,
                    const std::vector<std::string>& values, const Histogram& h) {
  const std::vector<uint64_t> c = h.Cumulative();
  for (size_t i = 0; i < h.bounds().size(); ++i) {
    absl::StrAppend(out, name, "_bucket", Labels(names, values, "le", Number(h.bounds()[i])), " ", c[i], "\n");
  }
  absl::StrAppend(out, name, "_bucket", Labels(names, values, "le", "+Inf"), " ", c.back(), "\n");
  absl::StrAppend(out, name, "_sum", Labels(names, values), " ", Number(h.sum()), "\n");
  absl::StrAppend(out, name, "_count", Labels(names, values), " ", c.back(), "\n");
}

}  // namespace

void Gauge::Add(double d) { AddDouble(v_, d); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  Require(std::is_sorted(bounds_.begin(), bounds_.end()), "histogram bounds must ascend", "");
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  AddDouble(sum_, v);
}

std::vector<uint64_t> Histogram::Cumulative() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    total += buckets_[i].load(std::memory_order_relaxed);
    out[i] = total;
  }
  return out;
}

std::vector<double> LatencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

template <typename M>
M& Family<M>::With(const std::vector<std::string>& values) {
  Require(values.size() == label_names_.size(), "one value per label", "");
  absl::MutexLock l(&mu_);
  auto& slot = children_[values];
  if (slot == nullptr) slot = make_();
  return *slot;
}

template <typename M>
void Family<M>::ForEach(const std::function<void(const std::vector<std::string>&, const M&)>& f) const {
  absl::MutexLock l(&mu_);
  for (const auto& [values, child] : children_) f(values, *child);
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

struct Registry::Entry {
  std::string name;
  std::string help;
  Type type;
  std::function<void(absl::string_view name, std::string*)> write;  // the samples
};

Registry::Registry() = default;
Registry::~Registry() = default;

void Registry::Add(absl::string_view name, absl::string_view help, Type type,
                   std::function<void(absl::string_view, std::string*)> write) {
  Require(ValidName(name), "bad metric name", name);
  Require(type != Type::kCounter || absl::EndsWith(name, "_total"), "counter names end in _total", name);
  absl::MutexLock l(&mu_);
  for (const auto& e : entries_) Require(e->name != name, "registered twice", name);
  auto e = std::make_unique<Entry>();
  e->name = std::string(name);
  for (char c : help) {
    if (c == '\\') {
      e->help += "\\\\";
    } else if (c == '\n') {
      e->help += "\\n";
    } else {
      e->help += c;
    }
  }
  e->type = type;
  e->write = std::move(write);
  entries_.push_back(std::move(e));
}

Counter& Registry::AddCounter(absl::string_view name, absl::string_view help) {
  return AddCounters(name, help, {}).With({});
}

Family<Counter>& Registry::AddCounters(absl::string_view name, absl::string_view help,
                                       std::vector<std::string> labels) {
  for (const auto& l : labels) Require(ValidName(l), "bad label name", l);
  auto family = std::make_shared<Family<Counter>>(std::move(labels), [] { return std::make_unique<Counter>(); });
  Add(name, help, Type::kCounter, [family](absl::string_view n, std::string* out) {
    family->ForEach([&](const std::vector<std::string>& values, const Counter& c) {
      absl::StrAppend(out, n, Labels(family->label_names(), values), " ", c.value(), "\n");
    });
  });
  return *family;
}

Gauge& Registry::AddGauge(absl::string_view name, absl::string_view help) { return AddGauges(name, help, {}).With({}); }

Family<Gauge>& Registry::AddGauges(absl::string_view name, absl::string_view help, std::vector<std::string> labels) {
  for (const auto& l : labels) Require(ValidName(l), "bad label name", l);
  auto family = std::make_shared<Family<Gauge>>(std::move(labels), [] { return std::make_unique<Gauge>(); });
  Add(name, help, Type::kGauge, [family](absl::string_view n, std::string* out) {
    family->ForEach([&](const std::vector<std::string>& values, const Gauge& g) {
      absl::StrAppend(out, n, Labels(family->label_names(), values), " ", Number(g.value()), "\n");
    });
  });
  return *family;
}

Histogram& Registry::AddHistogram(absl::string_view name, absl::string_view help, std::vector<double> bounds) {
  return AddHistograms(name, help, {}, std::move(bounds)).With({});
}

Family<Histogram>& Registry::AddHistograms(absl::string_view name, absl::string_view help,
                                           std::vector<std::string> labels, std::vector<double> bounds) {
  for (const auto& l : labels) Require(ValidName(l) && l != "le", "bad label name", l);
  auto family = std::make_shared<Family<Histogram>>(
      std::move(labels), [bounds = std::move(bounds)] { return std::make_unique<Histogram>(bounds); });
  Add(name, help, Type::kHistogram, [family](absl::string_view n, std::string* out) {
    family->ForEach([&](const std::vector<std::string>& values, const Histogram& h) {
      WriteHistogram(out, n, family->label_names(), values, h);
    });
  });
  return *family;
}

void Registry::AddCollector(absl::string_view name, absl::string_view help, Type type, std::vector<std::string> labels,
                            std::function<std::vector<Sample>()> collect) {
  Require(type != Type::kHistogram, "collectors report counters or gauges", name);
  for (const auto& l : labels) Require(ValidName(l), "bad label name", l);
  Add(name, help, type,
      [labels = std::move(labels), collect = std::move(collect)](absl::string_view n, std::string* out) {
        for (const Sample& s : collect()) absl::StrAppend(out, n, Labels(labels, s.labels), " ", Number(s.value), "\n");
      });
}

std::string Registry::Exposition() const {
  std::vector<const Entry*> entries;
  {
    absl::MutexLock l(&mu_);
    for (const auto& e : entries_) entries.push_back(e.get());
  }
  std::string out;
  for (const Entry* e : entries) {
    absl::StrAppend(&out, "# HELP ", e->name, " ", e->help, "\n# TYPE ", e->name, " ", TypeName(e->type), "\n");
    e->write(e->name, &out);
  }
  return out;
}

}  // namespace carebroker::metrics
