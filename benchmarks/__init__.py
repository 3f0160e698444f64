"""Performance benchmarks (``make bench``): step time, allocator / regulariser share, peak memory."""
