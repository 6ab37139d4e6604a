// Ground truth for a Go program (frame pointers, no .eh_frame): main.main
// calls goBurn, which burns CPU for SECONDS.
// usage: go_burn SECONDS
package main

import (
	"os"
	"strconv"
	"time"
)

var sink int

//go:noinline
func goBurn(d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		for i := 0; i < 100000; i++ {
			sink += i
		}
	}
}

func main() {
	seconds, _ := strconv.ParseFloat(os.Args[1], 64)
	goBurn(time.Duration(seconds * float64(time.Second)))
}
