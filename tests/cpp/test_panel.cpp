#include "core/panel.hpp"
#include "test_util.hpp"

using namespace ud2m;

TEST(Panel, PlacesImagesSideBySideAtACommonHeight) {
  auto big = torch::zeros({1, 3, 32, 32});
  auto small = torch::full({1, 1, 8, 8}, 0.5);  // gray, 4x smaller: repeated to 32
  auto panel = make_panel({{"a", big}, {"b", small}});
  ASSERT_EQ(panel.size(1), 3);
  const int64_t width = 8 + 32 + 8 + 32 + 8;
  EXPECT_EQ(panel.size(3), width);
  const int64_t top = panel.size(2) - 8 - 32;
  EXPECT_TRUE(torch::equal(panel[0].narrow(1, top, 32).narrow(2, 8, 32), big[0]));
  EXPECT_TRUE(torch::allclose(panel[0].narrow(1, top, 32).narrow(2, 48, 32), torch::full({3, 32, 32}, 0.5)));
  // Captions put ink (black pixels) above each tile.
  EXPECT_LT(panel[0].narrow(1, 0, top).narrow(2, 8, 32).min().item<float>(), 0.5);
}

TEST(Panel, ACaptionWiderThanItsImageWidensTheColumnInsteadOfBeingCut) {
  auto tile = torch::zeros({1, 3, 16, 16});
  const std::string caption = "posterior mean";  // 14 glyphs of 12 px: 168 px over a 16 px image
  auto panel = make_panel({{caption, tile}});
  const int64_t column = 14 * 12;
  EXPECT_EQ(panel.size(3), 8 + column + 8);
  const int64_t top = panel.size(2) - 8 - 16;
  // The last glyph ('n') is drawn, and the image sits in the middle of the column.
  EXPECT_LT(panel[0].narrow(1, 0, top).narrow(2, 8 + column - 12, 12).min().item<float>(), 0.5);
  EXPECT_TRUE(torch::equal(panel[0].narrow(1, top, 16).narrow(2, 8 + (column - 16) / 2, 16), tile[0]));
}
