package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	cpapi "github.com/wagglevm/waggle/gen/control-plane/v1"
)

var sledCommands = []vmCommand{
	{"list", "list the fleet's sleds: address, state, what they offer and what their VMMs reserve"},
}

func sledUsage() string {
	var b strings.Builder
	b.WriteString("usage: waggle sled <command> [flags]\n\ncommands:\n")
	for _, c := range sledCommands {
		fmt.Fprintf(&b, "  %-8s %s\n", c.name, c.summary)
	}
	b.WriteString(cpCommonFlags + "\n`waggle sled <command> -h` shows a command's flags.\n")
	return b.String()
}

// runSled runs one `waggle sled` command line.
func runSled(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, sledUsage())
		return errUsage
	}
	switch args[0] {
	case "list":
		c := newCPCmd("sled", "list", sledCommands[0].summary, stdout, stderr)
		return explainCPNetErr(c.sledList(ctx, args[1:]))
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, sledUsage())
		return nil
	}
	fmt.Fprintf(stderr, "waggle sled: unknown command %q\n%s", args[0], sledUsage())
	return errUsage
}

func (c *cpCmd) sledList(ctx context.Context, args []string) error {
	if err := c.parse(args, 0, ""); err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	all := cpapi.SledList{Sleds: []cpapi.Sled{}}
	err = followPages(func(token *string) (*string, error) {
		r, err := cl.SledListWithResponse(ctx, &cpapi.SledListParams{PageToken: token})
		if err != nil {
			return nil, err
		}
		if r.JSON200 == nil {
			return nil, c.fail(r.StatusCode(), r.Body, "")
		}
		all.Sleds = append(all.Sleds, r.JSON200.Sleds...)
		return r.JSON200.NextPageToken, nil
	})
	if err != nil {
		return err
	}
	if c.json() {
		return c.printJSON(all)
	}
	if len(all.Sleds) == 0 {
		fmt.Fprintln(c.stdout, "no sleds; a sled joins when its `waggle sled-agent -control-plane ADDR` starts")
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tSTATE\tCPUS\tMEMORY MiB\tVMMS\tLAST CONTACT")
	for _, s := range all.Sleds {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%d/%d\t%d\t%s\n", s.Id, s.Address, s.State,
			s.Reserved.Cpus, s.Capacity.Cpus, s.Reserved.MemoryMib, s.Capacity.MemoryMib, s.Vmms, s.LastContact.Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, "(CPUS and MEMORY: reserved/capacity)")
	return nil
}
