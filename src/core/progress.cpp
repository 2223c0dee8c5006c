#include "core/progress.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <exception>

#include "core/log.hpp"

namespace ud2m {

Progress::Progress(std::string label, int total)
    : label_(std::move(label)),
      total_(total),
      tty_(::isatty(STDERR_FILENO) && log::threshold() <= log::Level::info),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

Progress::~Progress() {
  // Unwound by an error before any work was done: the error says it all.
  if (std::uncaught_exceptions() > 0 && done_ == 0) {
    if (tty_) std::fputs("\r\033[K", stderr);
    return;
  }
  draw(true);
}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::step(const std::string& note) {
  ++done_;
  note_ = note;
  auto now = std::chrono::steady_clock::now();
  // A terminal gets a live bar; a log file gets a line a minute.
  const auto period = tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(60000);
  if (now - last_draw_ > period || (tty_ && done_ == total_)) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::draw(bool final) {
  const double seconds = elapsed_seconds();
  const int width = 30, filled = total_ > 0 ? width * done_ / total_ : width;
  const double rate = seconds > 0 ? done_ / seconds : 0.0;
  const double eta = rate > 0 ? (total_ - done_) / rate : 0.0;
  std::string bar = std::string(filled, '#') + std::string(width - filled, '.');
  if (final) {
    if (log::threshold() > log::Level::info) return;
    if (tty_) std::fputs("\r\033[K", stderr);
    fmt::print(stderr, "ud2m: {}: {}/{} steps in {:.1f} s{}\n", label_, done_, total_, seconds,
               note_.empty() ? "" : " (" + note_ + ")");
    return;
  }
  if (!tty_) {
    if (log::threshold() <= log::Level::info)
      fmt::print(stderr, "ud2m: {}: {}/{} {:.2f} it/s ETA {:.0f} s {}\n", label_, done_, total_, rate, eta, note_);
    return;
  }
  fmt::print(stderr, "\r\033[K{} [{}] {}/{} {:.1f} it/s ETA {:.0f} s {}", label_, bar, done_, total_, rate, eta,
             note_);
  std::fflush(stderr);
}

}  // namespace ud2m
