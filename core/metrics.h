// Metrics in the Prometheus text exposition format (version 0.0.4):
// counters, gauges and histograms, each with or without labels, registered
// once in a Registry and written out at every scrape.
//
//   metrics::Registry reg;
//   auto& sent = reg.AddCounters("carebroker_messages_accepted_total", "Sends stored.", {"workflow"});
//   sent.With({"discharge-notification"}).Inc();
//   auto& commit = reg.AddHistogram("carebroker_commit_seconds", "...", metrics::LatencyBuckets());
//   commit.Observe(0.0021);
//   std::string text = reg.Exposition();
//
// Label values are ODS codes, workflows, reason codes and the like; nothing
// about a person is ever a label. Updates are lock-free (atomics); adding a
// new label set takes a lock once. Values computed at scrape time (a
// mailbox's depth, a file's size) come from collectors.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/node_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace carebroker::metrics {

class Counter {
 public:
  void Inc(uint64_t n = 1) { v_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

class Gauge {
 public:
  void Set(double v) { v_.store(v, std::memory_order_relaxed); }
  void Add(double d);
  double value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> v_{0};
};

class Histogram {
 public:
  // `bounds`: the buckets' upper bounds, ascending (+Inf is implied).
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);

  const std::vector<double>& bounds() const { return bounds_; }
  // Cumulative counts per bound, then the total count; and the sum.
  std::vector<uint64_t> Cumulative() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1 (the last is +Inf)
  std::atomic<double> sum_{0};
};

// Seconds, from 100 µs to 10 s: commit, delivery and request latencies.
std::vector<double> LatencyBuckets();

// One sample a collector reports: label values (in the family's label
// order) and the value.
struct Sample {
  std::vector<std::string> labels;
  double value = 0;
};

enum class Type { kCounter, kGauge, kHistogram };

// A metric family with labels: one child per distinct label-value list.
template <typename M>
class Family {
 public:
  using Factory = std::function<std::unique_ptr<M>()>;
  Family(std::vector<std::string> label_names, Factory make)
      : label_names_(std::move(label_names)), make_(std::move(make)) {}

  // The child for these label values (created on first use); the reference
  // stays valid for the family's lifetime. `values` must have one entry per
  // label name.
  M& With(const std::vector<std::string>& values);

  const std::vector<std::string>& label_names() const { return label_names_; }
  // Calls f(values, child) for every child, in no particular order.
  void ForEach(const std::function<void(const std::vector<std::string>&, const M&)>& f) const;

 private:
  const std::vector<std::string> label_names_;
  const Factory make_;
  mutable absl::Mutex mu_;
  absl::node_hash_map<std::vector<std::string>, std::unique_ptr<M>> children_ ABSL_GUARDED_BY(mu_);
};

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Each name is registered once (a second registration of a name is a
  // programming error and aborts). Names and label names must match
  // [a-zA-Z_:][a-zA-Z0-9_:]*; counters' names end in _total.
  Counter& AddCounter(absl::string_view name, absl::string_view help);
  Family<Counter>& AddCounters(absl::string_view name, absl::string_view help, std::vector<std::string> labels);
  Gauge& AddGauge(absl::string_view name, absl::string_view help);
  Family<Gauge>& AddGauges(absl::string_view name, absl::string_view help, std::vector<std::string> labels);
  Histogram& AddHistogram(absl::string_view name, absl::string_view help, std::vector<double> bounds);
  Family<Histogram>& AddHistograms(absl::string_view name, absl::string_view help, std::vector<std::string> labels,
                                   std::vector<double> bounds);
  // A family whose samples are computed at each scrape (gauges or
  // counters), e.g. from the store. Called on the scraping thread.
  void AddCollector(absl::string_view name, absl::string_view help, Type type, std::vector<std::string> labels,
                    std::function<std::vector<Sample>()> collect);

  // Every metric, in registration order, in the text exposition format.
  std::string Exposition() const;

 private:
  struct Entry;
  void Add(absl::string_view name, absl::string_view help, Type type,
           std::function<void(absl::string_view name, std::string* out)> write);

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
};

// The content type of Exposition()'s text.
inline constexpr absl::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace carebroker::metrics
