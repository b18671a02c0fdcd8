// helloworld behaves like Istio's HelloWorld sample for the checks meshconf makes: GET /hello answers
// "Hello version: <SERVICE_VERSION>, instance: <hostname>" and GET /health answers 200, on port 5000.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"time"
)

func main() {
	version := os.Getenv("SERVICE_VERSION")
	host, err := os.Hostname()
	if err != nil {
		log.Fatalf("hostname: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello version: %s, instance: %s\n", version, host)
	})
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "Helloworld is healthy")
	})
	srv := &http.Server{Addr: ":5000", Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("helloworld %s listening on :5000", version)
	log.Fatal(srv.ListenAndServe())
}
