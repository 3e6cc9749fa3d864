package vm_test

import (
	"context"
	"fmt"
	"log"

	"github.com/skbstat/skbstat/test/vm"
)

// Boot every kernel of the matrix with a static helper inside and read
// what the script printed.
func ExampleRun() {
	ctx := context.Background()
	for _, k := range vm.Matrix {
		bin, err := vm.BuildStatic(ctx, k, "github.com/skbstat/skbstat/test/traffic", "/tmp")
		if err != nil {
			log.Fatal(err)
		}
		res, err := vm.Run(ctx, k, vm.Options{
			Files:   map[string]string{"/bin/traffic": bin},
			Modules: []string{"veth"},
			Script:  "uname -r\ntraffic udp -n 10 127.0.0.1:9\n",
		})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(k, res.ExitStatus, res.Console)
	}
}
