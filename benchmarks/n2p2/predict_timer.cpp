// Times n2p2's Prediction::predict() (neighbour list, symmetry functions, networks,
// forces) on every structure of an n2p2 input.data file, in the potential's units.
//
//   predict_timer POTENTIAL_DIR input.data ROUNDS
//
// Prints one line per call: "frame energy milliseconds" (energy in the potential's
// unit, offsets added, as nnp-predict reports it). Structures are copied into place
// before the clock starts, so only predict() is timed.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "Prediction.h"

int main(int argc, char** argv)
{
    if (argc != 4)
    {
        std::fprintf(stderr, "usage: %s POTENTIAL_DIR input.data ROUNDS\n", argv[0]);
        return 2;
    }
    std::string const dir = argv[1];
    int const rounds = std::stoi(argv[3]);
    nnp::Prediction p;
    p.log.writeToStdout = false;
    p.fileNameSettings = dir + "/input.nn";
    p.fileNameScaling = dir + "/scaling.data";
    p.formatWeightsFilesShort = dir + "/weights.%03zu.data";
    p.setup();

    std::vector<nnp::Structure> frames;
    std::ifstream file(argv[2]);
    if (!file)
    {
        std::fprintf(stderr, "cannot open %s\n", argv[2]);
        return 1;
    }
    while (file.peek() != EOF)
    {
        nnp::Structure s;
        s.setElementMap(p.elementMap);
        s.readFromFile(file);
        frames.push_back(s);
        file >> std::ws;
    }
    for (int round = 0; round < rounds; ++round)
    {
        for (size_t k = 0; k < frames.size(); ++k)
        {
            p.structure = frames[k];
            auto const t0 = std::chrono::steady_clock::now();
            p.predict();
            auto const t1 = std::chrono::steady_clock::now();
            double const ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
            std::printf("%zu %.17g %.6f\n", k, p.structure.energy, ms);
        }
    }
    return 0;
}
