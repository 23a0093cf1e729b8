# bitraft — the two commands a new user needs:
#   make run    build, then start the server (bitraft serve: 127.0.0.1:4000, ./data)
#   make test   build, then run every test
# Other targets: build, test-asan, test-tsan, test-long, sim-long, fuzz-smoke, bench, format,
# clean.

BUILD      ?= build
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=
RUN_ARGS   ?=

.PHONY: all deps build run test test-asan test-tsan test-long sim-long fuzz-smoke bench bench-deps format clean

all: build

deps:
	@scripts/deps.sh build

$(BUILD)/Makefile: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)

build: deps $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

# RUN_ARGS passes flags to the server, e.g. make run RUN_ARGS='--port 5000'.
run: build
	$(BUILD)/bitraft serve $(RUN_ARGS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j 1

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DBR_SANITIZE=address,undefined
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j 1

# The concurrency tests under ThreadSanitizer.
test-tsan: deps
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DBR_SANITIZE=thread
	cmake --build build-tsan -j $(JOBS)
	cd build-tsan && ctest --output-on-failure -j 1 -R concurrency

# Longer tests kept out of CI (more crash rounds, bigger stores).
test-long: build
	cd $(BUILD) && BR_TEST_LONG=1 ctest --output-on-failure -j 1

# 100,000 random fault schedules of the simulated Raft cluster.
sim-long: build
	BR_TEST_LONG=1 $(BUILD)/tests/sim/bitraft-raft-sim

# The libFuzzer targets (Raft message codec, HTTP parsers) built with clang,
# each run for FUZZ_SECONDS. A crash fails the target and leaves its input
# in build-fuzz/.
FUZZ_SECONDS ?= 20
fuzz-smoke:
	@scripts/deps.sh fuzz
	cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DBR_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build build-fuzz -j $(JOBS) --target fuzz_codec fuzz_http
	cd build-fuzz && ./tests/sim/fuzz_codec -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1
	cd build-fuzz && ./tests/http/fuzz_http -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1

bench-deps:
	@scripts/deps.sh bench

bench: bench-deps build
	$(BUILD)/bitraft-bench engine

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-tsan build-fuzz
