package bin_test

import (
	"fmt"

	"github.com/clusterer-go/clusterer/bin"
)

// Build a packet, then parse it back and pop its fields.
func ExampleBuilder() {
	b := bin.NewBuilder(1, "dialog-dlg-repl", 1)
	b.PushStr("callid-42@example.com")
	b.PushInt(3600)
	b.PushTrailer(bin.Trailer{Cluster: 1, Src: 2, Dst: 3})
	frame, err := b.Finish()
	if err != nil {
		fmt.Println(err)
		return
	}

	p, err := bin.Parse(frame)
	if err != nil {
		fmt.Println(err)
		return
	}
	r := p.Reader()
	t := r.PopTrailer()
	callID, expires := r.PopStr(), r.PopInt()
	if err := r.Done(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(frame), p.Capability, p.Type, callID, expires, t)
	// Output: 70 dialog-dlg-repl 1 callid-42@example.com 3600 {1 2 3}
}

// Go values travel as msgpack inside an ordinary BIN string.
func ExampleBuilder_PushValue() {
	type profile struct {
		Name  string
		Count int
	}
	b := bin.NewBuilder(1, "dialog-prof-repl", 2)
	b.PushValue(profile{Name: "inbound", Count: 17})
	frame, _ := b.Finish()

	p, _ := bin.Parse(frame)
	r := p.Reader()
	var got profile
	if err := r.PopValue(&got); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%+v\n", got)
	// Output: {Name:inbound Count:17}
}
