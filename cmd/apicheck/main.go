// Command apicheck runs the contract checks of `make check`:
//
//	apicheck lock       released documents unchanged, LOCK lines only added
//	apicheck validate   every document valid and following the house rules
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/wagglevm/waggle/internal/apicheck"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: apicheck lock|validate")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "lock":
		err = apicheck.CheckLock(".")
	case "validate":
		var docs []string
		docs, err = apicheck.Documents(".")
		for _, d := range docs {
			err = errors.Join(err, apicheck.ValidateDocument(".", d))
		}
		if err == nil {
			fmt.Printf("%d contracts valid\n", len(docs))
		}
	default:
		err = fmt.Errorf("unknown check %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "apicheck:", err)
		os.Exit(1)
	}
}
