// The `skiff` command arrives with the CLI issue; until then it says so plainly.
Console.Error.WriteLine("skiff: no commands yet (see the CLI issue)");
return 2;
