"""What tests share and benchmarks do not: desktop sessions, the chaos campaign,
fakes, ipc and sources helpers, and the child processes tests start."""
