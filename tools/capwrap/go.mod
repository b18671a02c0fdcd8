module meshconf.local/capwrap

go 1.24
