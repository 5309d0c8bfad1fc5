// Placeholder while the cluster tests are written.
#include <gtest/gtest.h>
