#include "core/panel.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <cmath>

#include "core/error.hpp"

namespace ud2m {
namespace {

// A 5x7 pixel font: each glyph is 7 rows of 5 pixels, '#' = ink. Lower case
// is drawn as upper case; characters without a glyph are drawn as '?'.
struct Glyph {
  char c;
  const char* rows[7];
};
const Glyph kFont[] = {
    {' ', {".....", ".....", ".....", ".....", ".....", ".....", "....."}},
    {'A', {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"}},
    {'B', {"####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."}},
    {'C', {".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."}},
    {'D', {"####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."}},
    {'E', {"#####", "#....", "#....", "####.", "#....", "#....", "#####"}},
    {'F', {"#####", "#....", "#....", "####.", "#....", "#....", "#...."}},
    {'G', {".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"}},
    {'H', {"#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"}},
    {'I', {".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."}},
    {'J', {"..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."}},
    {'K', {"#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"}},
    {'L', {"#....", "#....", "#....", "#....", "#....", "#....", "#####"}},
    {'M', {"#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"}},
    {'N', {"#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"}},
    {'O', {".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."}},
    {'P', {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."}},
    {'Q', {".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"}},
    {'R', {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"}},
    {'S', {".####", "#....", "#....", ".###.", "....#", "....#", "####."}},
    {'T', {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."}},
    {'U', {"#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."}},
    {'V', {"#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."}},
    {'W', {"#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."}},
    {'X', {"#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"}},
    {'Y', {"#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."}},
    {'Z', {"#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"}},
    {'0', {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."}},
    {'1', {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."}},
    {'2', {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"}},
    {'3', {"#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."}},
    {'4', {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."}},
    {'5', {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."}},
    {'6', {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."}},
    {'7', {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."}},
    {'8', {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."}},
    {'9', {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."}},
    {'.', {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."}},
    {',', {".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."}},
    {':', {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."}},
    {'-', {".....", ".....", ".....", "#####", ".....", ".....", "....."}},
    {'+', {".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."}},
    {'=', {".....", ".....", "#####", ".....", "#####", ".....", "....."}},
    {'/', {".....", "....#", "...#.", "..#..", ".#...", "#....", "....."}},
    {'(', {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."}},
    {')', {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."}},
    {'%', {"##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"}},
    {'_', {".....", ".....", ".....", ".....", ".....", ".....", "#####"}},
    {'x', {".....", ".....", "#...#", ".#.#.", "..#..", ".#.#.", "#...#"}},  // "times"
    {'?', {".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."}},
};

const Glyph& glyph_for(char c) {
  for (auto& g : kFont)
    if (g.c == c) return g;
  const char upper = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (auto& g : kFont)
    if (g.c == upper) return g;
  return kFont[sizeof kFont / sizeof kFont[0] - 1];
}

constexpr int kScale = 2, kGlyphW = 6 * kScale, kTextH = 7 * kScale, kCaptionH = 11 * kScale;

// Draws `text` in black at (x0, y0) of a (3, H, W) canvas, clipped to max_width.
void draw_text(torch::Tensor& canvas, const std::string& text, int64_t x0, int64_t y0, int64_t max_width) {
  auto pixels = canvas.accessor<float, 3>();
  for (size_t i = 0; i < text.size(); ++i) {
    const int64_t gx = x0 + static_cast<int64_t>(i) * kGlyphW;
    if (gx + kGlyphW > x0 + max_width) break;
    const Glyph& g = glyph_for(text[i]);
    for (int r = 0; r < 7 * kScale; ++r)
      for (int c = 0; c < 5 * kScale; ++c)
        if (g.rows[r / kScale][c / kScale] == '#')
          for (int ch = 0; ch < 3; ++ch) pixels[ch][y0 + r][gx + c] = 0.0f;
  }
}

}  // namespace

torch::Tensor make_panel(const std::vector<PanelItem>& items) {
  UD2M_CHECK(!items.empty(), "a panel needs at least one image");
  int64_t height = 0;
  for (auto& item : items) height = std::max(height, item.image.size(2));
  const int64_t gutter = 8;
  std::vector<torch::Tensor> tiles;
  for (auto& item : items) {
    auto image = item.image.detach().to(torch::kCPU, torch::kFloat32).clamp(0, 1);
    if (image.size(1) == 1) image = image.expand({-1, 3, -1, -1});
    const int64_t factor = std::max<int64_t>(1, height / image.size(2));
    image = image.repeat_interleave(factor, 2).repeat_interleave(factor, 3);
    image = torch::constant_pad_nd(image, {0, 0, 0, height - image.size(2)}, 1.0);  // bottom-pad odd sizes
    tiles.push_back(image[0]);
  }
  // Each column is as wide as its tile or its caption, whichever is wider, so
  // captions of small images are not cut; the tile is centred in it.
  std::vector<int64_t> columns;
  int64_t width = gutter;
  for (size_t i = 0; i < tiles.size(); ++i) {
    columns.push_back(std::max<int64_t>(tiles[i].size(2), static_cast<int64_t>(items[i].caption.size()) * kGlyphW));
    width += columns.back() + gutter;
  }
  auto canvas = torch::ones({3, gutter + kCaptionH + height + gutter, width});
  int64_t x = gutter;
  for (size_t i = 0; i < tiles.size(); ++i) {
    draw_text(canvas, items[i].caption, x, gutter + (kCaptionH - kTextH) / 2, columns[i]);
    const int64_t left = x + (columns[i] - tiles[i].size(2)) / 2;
    canvas.narrow(1, gutter + kCaptionH, height).narrow(2, left, tiles[i].size(2)).copy_(tiles[i]);
    x += columns[i] + gutter;
  }
  return canvas.unsqueeze(0);
}

torch::Tensor make_grid(const torch::Tensor& images) {
  const int64_t n = images.size(0), cols = static_cast<int64_t>(std::ceil(std::sqrt(double(n))));
  const int64_t rows = (n + cols - 1) / cols, c = images.size(1), h = images.size(2), w = images.size(3);
  auto padded = torch::cat({images, torch::ones({rows * cols - n, c, h, w}, images.options())});
  return padded.view({rows, cols, c, h, w}).permute({2, 0, 3, 1, 4}).reshape({1, c, rows * h, cols * w});
}

}  // namespace ud2m
