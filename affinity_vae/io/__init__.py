"""File formats shared by the stages: MRC volumes and stacks, SHREC 2021 folders, STAR tables."""
