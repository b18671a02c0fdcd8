module meshconf.local/pause

go 1.24
