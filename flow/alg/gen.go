package alg

// The test-only program that runs flow/bpf/ftp.h's parser on crafted frames;
// its bindings end in _test so they are compiled into the tests only.
//go:generate go tool bpf2go -cc clang -cflags "-mcpu=v3 -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -output-suffix _test -type ftp_result -type alg_cfg -type ftp_scratch algtest bpf/alg_test.c
