package flow

//go:generate go tool bpf2go -cc clang -cflags "-mcpu=v3 -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type vs_key -type vserver -type addr_key -type backend -type rev_key -type rev -type flow_key -type flow -type vs_stats -type be_stats -type fib_key -type fib_entry -type pair -type self_cfg -type rflow -type flow_event -type be_list -type expect_key -type expect -type ftp_vip_list lb bpf/lb.c
