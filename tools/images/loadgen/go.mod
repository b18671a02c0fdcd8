module meshconf.local/loadgen

go 1.24
