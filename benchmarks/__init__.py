"""Scripts that print numbers (never run as tests), and the process harness they share with the tests."""
