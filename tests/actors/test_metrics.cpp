// The registry a process exports holds exactly the families of the one table
// (nettorrent/metric_families.hpp), each with the table's type and labels:
// what the dashboard checks read is what the exporter serves.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>

#include "metrics.hpp"
#include "nettorrent/metric_families.hpp"

namespace nt = nettorrent;

namespace {

nt::metric_type type_of(prometheus::MetricType t) {
  switch (t) {
  case prometheus::MetricType::Counter:
    return nt::metric_type::counter;
  case prometheus::MetricType::Gauge:
    return nt::metric_type::gauge;
  case prometheus::MetricType::Histogram:
    return nt::metric_type::histogram;
  default:
    ADD_FAILURE() << "a metric of a type the table has no name for";
    return nt::metric_type::counter;
  }
}

} // namespace

TEST(MetricFamilies, TheExporterServesExactlyTheTablesFamiliesAndLabels) {
  const nt::metrics m("n0", nt::run_layout(2, {2, 1, 1}));
  std::map<std::string, const prometheus::MetricFamily*> served;
  const auto collected = m.registry()->Collect();
  for (const auto& f : collected)
    served[f.name] = &f;
  EXPECT_EQ(served.size(), nt::metric_families.size());
  for (const auto& want : nt::metric_families) {
    const std::string name{want.name};
    const auto it = served.find(name);
    ASSERT_NE(it, served.end()) << name << " is in the table but not exported";
    const prometheus::MetricFamily& f = *it->second;
    EXPECT_EQ(type_of(f.type), want.type) << name;
    EXPECT_EQ(f.help, std::string{want.help}) << name;
    std::set<std::string> labels;
    for (auto l : want.labels)
      if (!l.empty())
        labels.emplace(l);
    ASSERT_FALSE(f.metric.empty()) << name << " has no series";
    for (const auto& series : f.metric) {
      std::set<std::string> got;
      for (const auto& lp : series.label)
        got.insert(lp.name);
      EXPECT_EQ(got, labels) << name;
    }
  }
}

TEST(MetricFamilies, AFamilyOutsideTheTableIsRefused) {
  EXPECT_THROW((void)nt::metric_family_of("nettorrent_made_up_total", nt::metric_type::counter),
               std::logic_error);
  // The right name with the wrong type is no family either.
  EXPECT_THROW((void)nt::metric_family_of("nettorrent_samples_total", nt::metric_type::gauge),
               std::logic_error);
}
