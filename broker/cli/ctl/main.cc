#include <iostream>

#include "broker/cli/ctl/ctl.h"

int main(int argc, char** argv) { return carebroker::RunCtl(argc, argv, std::cout, std::cerr); }
