"""One thin CLI per DVC stage: parse args, load params, call kdflow, write outputs."""
