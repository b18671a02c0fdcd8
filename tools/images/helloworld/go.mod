module meshconf.local/helloworld

go 1.24
