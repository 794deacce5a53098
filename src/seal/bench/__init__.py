"""Benchmarks (`seal bench`): the inner loop against the reference code's (`inner_loop`) and a
whole ReSTEM round on a fixed workload (`round`). Speed and memory targets live here, never in
unit tests."""
