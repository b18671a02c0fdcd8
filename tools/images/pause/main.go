// pause holds a pod's namespaces open: it sleeps until SIGINT or SIGTERM and, as PID 1 of a shared PID namespace,
// reaps orphaned children. meshconf's stand-in for registry.k8s.io/pause, built here because no registry answers.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
