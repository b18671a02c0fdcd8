// capwrap is an OCI runtime wrapper for machines whose capability bounding set is smaller than what
// `docker run --privileged` (and every privileged pod) asks for. It removes from the OCI spec runc is about to use
// every capability outside its own bounding set, then execs the real runc with the same arguments.
//
// It is registered with `dockerd --add-runtime capwrap=PATH --default-runtime capwrap` on the host, and as the
// runc `BinaryName` of containerd inside meshconf's kind node image. On a machine with a full bounding set it
// changes nothing.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// capNames maps Linux capability names to their bit numbers (linux/capability.h).
var capNames = map[string]uint{
	"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3, "CAP_FSETID": 4,
	"CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_LINUX_IMMUTABLE": 9,
	"CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13,
	"CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15, "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18,
	"CAP_SYS_PTRACE": 19, "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
	"CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27, "CAP_LEASE": 28,
	"CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31, "CAP_MAC_OVERRIDE": 32,
	"CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35, "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37,
	"CAP_PERFMON": 38, "CAP_BPF": 39, "CAP_CHECKPOINT_RESTORE": 40,
}

func main() {
	runc := realRunc()
	args := os.Args[1:]
	if spec, key := specFile(args); spec != "" {
		if err := fitCaps(spec, key); err != nil {
			fmt.Fprintf(os.Stderr, "capwrap: %s: %v\n", spec, err)
			os.Exit(1)
		}
	}
	argv := append([]string{runc}, args...)
	if err := syscall.Exec(runc, argv, os.Environ()); err != nil {
		fmt.Fprintf(os.Stderr, "capwrap: exec %s: %v\n", runc, err)
		os.Exit(127)
	}
}

// realRunc is $CAPWRAP_RUNC, else the first runc found in the usual places.
func realRunc() string {
	if p := os.Getenv("CAPWRAP_RUNC"); p != "" {
		return p
	}
	for _, p := range []string{"/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return "runc"
}

// specFile returns the spec file runc will read and where its capabilities are: `config.json` of the bundle for
// create/run ("process" holds them), the `--process` file for exec (capabilities at the top level).
func specFile(args []string) (string, string) {
	sub := -1
	for i, a := range args {
		if a == "create" || a == "run" || a == "exec" {
			sub = i
			break
		}
	}
	if sub < 0 {
		return "", ""
	}
	flagValue := func(names ...string) string {
		for i := sub + 1; i < len(args); i++ {
			for _, n := range names {
				if args[i] == n && i+1 < len(args) {
					return args[i+1]
				}
				if strings.HasPrefix(args[i], n+"=") {
					return strings.TrimPrefix(args[i], n+"=")
				}
			}
		}
		return ""
	}
	if args[sub] == "exec" {
		if p := flagValue("--process", "-p"); p != "" {
			return p, ""
		}
		return "", ""
	}
	bundle := flagValue("--bundle", "-b")
	if bundle == "" {
		bundle = "."
	}
	return filepath.Join(bundle, "config.json"), "process"
}

// bounding reads this process's capability bounding set.
func bounding() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapBnd:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, fmt.Errorf("no CapBnd line in /proc/self/status")
}

func fitCaps(path, key string) error {
	bnd, err := bounding()
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return err
	}
	holder := doc
	if key != "" {
		p, ok := doc[key].(map[string]any)
		if !ok {
			return nil
		}
		holder = p
	}
	caps, ok := holder["capabilities"].(map[string]any)
	if !ok {
		return nil
	}
	changed := false
	for set, v := range caps {
		list, ok := v.([]any)
		if !ok {
			continue
		}
		kept := make([]any, 0, len(list))
		for _, c := range list {
			name, _ := c.(string)
			bit, known := capNames[name]
			if known && bnd&(1<<bit) == 0 {
				changed = true
				continue
			}
			kept = append(kept, c)
		}
		caps[set] = kept
	}
	if !changed {
		return nil
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o600)
}
