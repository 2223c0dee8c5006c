// A one-line progress bar on stderr (steps, rate, ETA) for long work; silent
// when stderr is not a terminal, except for a closing summary line.
#pragma once
#include <chrono>
#include <string>

namespace ud2m {

class Progress {
 public:
  Progress(std::string label, int total);
  ~Progress();
  void step(const std::string& note = "");  // one unit of work done
  double elapsed_seconds() const;

 private:
  void draw(bool final);
  std::string label_, note_;
  int total_, done_ = 0;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace ud2m
