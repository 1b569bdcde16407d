"""Real test infrastructure shared by the tests and the benchmarks (no mocks: a real HTTP
server speaking the OpenAI chat-completions protocol on 127.0.0.1)."""
