// The score ledger (score_ledger.hpp): curve points with the training loss
// since the last pass, the best, the target, undoing a round, and the run
// state it saves and restores.
#include <gtest/gtest.h>

#include "nettorrent/run_checkpoint.hpp"
#include "nettorrent/score_ledger.hpp"

namespace nt = nettorrent;

namespace {

TEST(ScoreLedger, BooksPointsWithTheLossSinceTheLastPassTheBestAndTheTarget) {
  nt::score_ledger l{0.8};
  l.add_training_loss(6.0, 4);
  l.add_training_loss(2.0, 4);
  const auto a = l.book(1, 8, 1.5, 0.9, 0.5);
  EXPECT_TRUE(a.improved); // the first pass
  EXPECT_FALSE(a.meets_target);
  EXPECT_DOUBLE_EQ(a.point.train_loss, 1.0);
  EXPECT_EQ(a.point.samples, 8u);
  EXPECT_EQ(l.loss_samples(), 0u);
  const auto b = l.book(1, 16, 2.5, 0.8, 0.4);
  EXPECT_FALSE(b.improved);
  EXPECT_DOUBLE_EQ(b.point.train_loss, 0.0); // nothing trained since
  const auto c = l.book(2, 24, 3.5, 0.5, 0.85);
  EXPECT_TRUE(c.improved);
  EXPECT_TRUE(c.meets_target);
  EXPECT_TRUE(l.reached_target());
  EXPECT_DOUBLE_EQ(l.time_to_target(), 3.5);
  const auto d = l.book(2, 32, 4.5, 0.4, 0.9);
  EXPECT_TRUE(d.meets_target);
  EXPECT_DOUBLE_EQ(l.time_to_target(), 3.5); // the first time counts
  EXPECT_DOUBLE_EQ(l.best(), 0.9);
  EXPECT_EQ(l.curve().size(), 4u);
  EXPECT_FALSE(nt::score_ledger{}.book(1, 1, 1, 1, 1).meets_target); // no target
}

TEST(ScoreLedger, UndoGoesBackToTheMark) {
  nt::score_ledger l{0.5};
  l.book(1, 8, 1, 1, 0.3);
  l.add_training_loss(3.0, 2);
  const auto m = l.marked();
  l.add_training_loss(5.0, 2);
  l.book(1, 16, 2, 1, 0.6);
  l.undo(m);
  EXPECT_EQ(l.curve().size(), 1u);
  EXPECT_DOUBLE_EQ(l.best(), 0.3);
  EXPECT_FALSE(l.reached_target());
  EXPECT_DOUBLE_EQ(l.time_to_target(), -1);
  EXPECT_DOUBLE_EQ(l.loss_sum(), 3.0);
  EXPECT_EQ(l.loss_samples(), 2u);
}

TEST(ScoreLedger, SavesAPrefixAndRestoresJudgingTheTargetAgain) {
  nt::score_ledger l{0.55};
  l.book(1, 8, 1, 1, 0.5);
  l.book(1, 16, 2, 1, 0.6);
  l.book(2, 24, 3, 1, 0.7);
  l.add_training_loss(1.5, 3);
  nt::run_state st;
  l.save(st, 2);
  ASSERT_EQ(st.curve.size(), 2u);
  EXPECT_DOUBLE_EQ(st.best_validation_accuracy, 0.6);
  EXPECT_TRUE(st.reached_target);
  EXPECT_DOUBLE_EQ(st.time_to_target, 2);
  EXPECT_DOUBLE_EQ(st.loss_sum, 1.5);
  EXPECT_EQ(st.loss_samples, 3u);
  // A resumed run with a higher target: not reached by those points.
  nt::score_ledger higher{0.65};
  higher.restore(st);
  EXPECT_FALSE(higher.reached_target());
  EXPECT_DOUBLE_EQ(higher.best(), 0.6);
  EXPECT_EQ(higher.curve().size(), 2u);
  EXPECT_DOUBLE_EQ(higher.loss_sum(), 1.5);
  EXPECT_TRUE(higher.book(2, 32, 4, 1, 0.66).meets_target);
}

} // namespace
